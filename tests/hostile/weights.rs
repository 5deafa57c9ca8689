//! Valid weights barlow did not expect: f16, bf16 and f64 files, and integer tensors.

use super::*;
use burn::tensor::{DType, TensorData};

/// The fixture's tensors with every f32 one stored as `dtype` (and, with `int`, `conv1.weight`
/// as int64), written as a new safetensors file.
fn recast(dtype: DType, int: bool, out: &Path) {
    let bytes = std::fs::read(common::fixture("tv_resnet18_w2.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = vec![];
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            owned.push((name, view.dtype(), view.shape().to_vec(), view.data().to_vec()));
            continue;
        }
        let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let (target, st_dtype) = match (int && name == "conv1.weight", dtype) {
            (true, _) => (DType::I64, safetensors::Dtype::I64),
            (false, DType::F16) => (DType::F16, safetensors::Dtype::F16),
            (false, DType::BF16) => (DType::BF16, safetensors::Dtype::BF16),
            _ => (DType::F64, safetensors::Dtype::F64),
        };
        let data = TensorData::new(values, view.shape().to_vec()).convert_dtype(target);
        owned.push((name, st_dtype, view.shape().to_vec(), data.into_bytes().to_vec()));
    }
    let views: Vec<_> = owned.iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(out, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn weights_in_f16_bf16_or_f64_load_as_f32_and_integer_weights_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("f32.safetensors");
    let arch = ["--arch", "resnet18", "--width", "2"];
    ok(&[&["export", "--weights", &common::fixture("tv_resnet18_w2.safetensors").display().to_string(), "--out",
        reference.to_str().unwrap()][..], &arch].concat());
    let want = common::read_safetensors(&reference);
    for (dtype, eps) in [(DType::F16, 1e-3f32), (DType::BF16, 8e-3), (DType::F64, 0.0)] {
        let file = dir.path().join(format!("{dtype:?}.safetensors"));
        recast(dtype, false, &file);
        let out = dir.path().join("out.safetensors");
        ok(&[&["export", "--weights", file.to_str().unwrap(), "--out", out.to_str().unwrap()][..], &arch].concat());
        for (name, (shape, got)) in common::read_safetensors(&out) {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let (want_shape, want) = &want[&name];
            assert_eq!(&shape, want_shape, "{dtype:?} {name}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= eps * w.abs().max(1e-3), "{dtype:?} {name}: {g} vs {w}");
            }
        }
    }
    // The encoder from a bf16 file evaluates: the step that panicked on a dtype mismatch.
    let bf16 = dir.path().join("BF16.safetensors");
    let knn = ok(&[&["eval", "knn", "--weights", bf16.to_str().unwrap(), "--set", "train.knn_limit=200"][..], &arch].concat());
    assert!(knn.contains("top-1"), "{knn}");
    let ints = dir.path().join("ints.safetensors");
    recast(DType::F32, true, &ints);
    let err = refused(&[&["export", "--weights", ints.to_str().unwrap()][..], &arch].concat());
    assert!(err.contains("`conv1.weight` holds I64") && err.contains("floating-point"), "{err}");
}

