//! The linear probe, top-k accuracy, label subsets and the embedding file format.

mod common;

use barlow::eval::{ProbeConfig, label_subset, linear::topk_accuracy, linear_probe};
use burn::tensor::{Device, Tensor, TensorData};

fn device() -> Device {
    barlow::backend::device("auto").unwrap()
}

#[test]
fn top_k_counts_ranks() {
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![0.9f32, 0.1, 0.5, 0.2, 0.3, 0.8, 0.0, 0.0, 0.1], [3, 3]),
        &device(),
    );
    // Row 0: label 0 is first. Row 1: label 1 is second. Row 2: label 2 is first.
    let acc = topk_accuracy(logits, &[0, 1, 2]);
    assert!((acc.top1 - 200.0 / 3.0).abs() < 1e-9 && acc.top5 == 100.0, "{acc:?}");
}

/// Gaussian clusters around class means: a linear classifier separates them.
#[test]
fn the_probe_learns_separable_classes() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (classes, dim, per) = (5usize, 16usize, 80usize);
    let means: Vec<Vec<f32>> = (0..classes).map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
    let mut make = |n: usize| {
        let mut x = vec![];
        let mut y = vec![];
        for i in 0..n * classes {
            let c = i % classes;
            x.extend(means[c].iter().map(|m| m + rng.random_range(-0.3..0.3f32)));
            y.push(c as u32);
        }
        (Tensor::<2>::from_data(TensorData::new(x, [n * classes, dim]), &device()), y)
    };
    let (train, train_y) = make(per);
    let (test, test_y) = make(20);
    // The probes' initial weights come from the device's generator: seeded, or an untrained
    // probe's accuracy changes from run to run (it once reached 62%).
    let _seed = common::seeded(&device(), 11);
    let config = ProbeConfig::new().with_epochs(30).with_batch_size(32).with_lr(0.5);
    let acc = linear_probe(&train, &train_y, &test, &test_y, classes, config, &device().autodiff());
    assert!(acc.top1 > 95.0, "{acc:?}");
    // Chance is 20%: an untrained probe does not get there.
    let none = linear_probe(&train, &train_y, &test, &test_y, classes, ProbeConfig::new().with_epochs(0), &device().autodiff());
    eprintln!("trained {:.1}%, untrained {:.1}%", acc.top1, none.top1);
    assert!(none.top1 < 60.0, "{none:?}");
}

#[test]
fn label_subsets_are_balanced_and_fixed_by_the_seed() {
    let labels: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
    let one = label_subset(&labels, 0.1, 4);
    assert_eq!(one.len(), 100);
    for c in 0..10 {
        assert_eq!(one.iter().filter(|&&i| labels[i] == c).count(), 10);
    }
    assert_eq!(one, label_subset(&labels, 0.1, 4));
    assert_ne!(one, label_subset(&labels, 0.1, 5));
    // At least one image of each class even when the fraction rounds to none.
    assert_eq!(label_subset(&labels, 0.001, 0).len(), 10);
}

#[test]
fn npy_files_have_an_aligned_header() {
    let bytes = barlow::cli::commands::npy(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'shape': (2, 3)") && header.contains("'<f4'") && header.ends_with('\n'));
    assert_eq!(&bytes[10 + header_len..10 + header_len + 4], &1.0f32.to_le_bytes());
    assert_eq!(bytes.len(), 10 + header_len + 24);
}
