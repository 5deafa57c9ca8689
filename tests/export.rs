//! Export to torchvision names and import back: same encoder, same features.

mod common;

use barlow::store::torchvision::{export_safetensors, import};
use barlow::model::{Arch, ResNet, ResNetConfig, Stem};
use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};

fn encoder(arch: Arch, device: &Device) -> ResNet {
    ResNetConfig::new(arch).with_stem(Stem::Cifar).with_width(8).with_zero_init_residual(false).init(device)
}

fn features(net: &ResNet, x: Tensor<4>) -> Vec<f32> {
    net.valid().forward(x).into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn export_then_import_gives_the_same_features() {
    let dir = std::env::temp_dir().join(format!("barlow-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in [Arch::Resnet18, Arch::Resnet50] {
        let device = common::device();
        device.seed(1);
        let trained = encoder(arch, &device);
        // A training-mode pass moves BN's running statistics away from 0 / 1.
        let _ = trained.forward(Tensor::random([8, 3, 16, 16], Distribution::Normal(0.5, 2.0), &device));
        let path = dir.join(format!("{arch:?}.safetensors"));
        export_safetensors(&trained.valid(), &path).unwrap();

        // torchvision's keys, BatchNorm's names and counters included.
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = st.names().into_iter().map(String::from).collect();
        for key in ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.num_batches_tracked",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer4.1.bn2.running_var"]
        {
            assert!(names.iter().any(|n| n == key), "{arch:?}: no `{key}` in the export");
        }
        assert!(!names.iter().any(|n| n.contains("gamma") || n.contains("beta")));

        device.seed(2);
        let fresh = encoder(arch, &device);
        let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
        assert_ne!(features(&fresh, x.clone()), features(&trained, x.clone()));
        let loaded = import(fresh, &path).unwrap();
        assert_eq!(features(&loaded, x.clone()), features(&trained, x));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn importing_into_another_architecture_names_the_file_and_the_problem() {
    let dir = std::env::temp_dir().join(format!("barlow-export-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::default();
    let path = dir.join("r18.safetensors");
    export_safetensors(&encoder(Arch::Resnet18, &device), &path).unwrap();
    let err = import(encoder(Arch::Resnet50, &device), &path).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("r18.safetensors"), "{msg}");
    std::fs::write(dir.join("junk.safetensors"), b"not a safetensors file").unwrap();
    let err = import(encoder(Arch::Resnet18, &device), &dir.join("junk.safetensors")).unwrap_err();
    assert!(format!("{err:#}").contains("junk.safetensors"));
    std::fs::remove_dir_all(&dir).ok();
}

/// torchvision's own ResNet loads the export with `strict=True` and computes the same features.
/// Runs where PyTorch is installed (scripts/make_fixtures.py says how); says so and passes where not.
#[test]
fn torchvision_loads_the_export_strictly_and_agrees() {
    let Some(python) = common::torch_python() else {
        eprintln!("skipped: no python with torch/torchvision (set BARLOW_TORCH_PYTHON or make .venv-ref)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("barlow-torchvision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (arch, stem, size) in [(Arch::Resnet18, Stem::Cifar, 32), (Arch::Resnet50, Stem::Imagenet, 64)] {
        let device = common::device();
        let net = ResNetConfig::new(arch).with_stem(stem).with_zero_init_residual(false).init(&device);
        let _ = net.forward(Tensor::random([4, 3, size, size], Distribution::Normal(0.3, 1.5), &device));
        let net = net.valid();
        let x = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device.inner());
        let features = net.forward(x.clone());
        let weights = dir.join("encoder.safetensors");
        export_safetensors(&net, &weights).unwrap();
        let probe = dir.join("probe.safetensors");
        let bytes = |t: &Tensor<4>| -> Vec<u8> {
            t.to_data().try_into_vec::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        let (xs, fs) = (bytes(&x), bytes(&features.clone().unsqueeze::<4>()));
        let views = vec![
            ("input", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, x.dims().to_vec(), &xs).unwrap()),
            ("features", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, features.dims().to_vec(), &fs).unwrap()),
        ];
        std::fs::write(&probe, safetensors::serialize(views, None).unwrap()).unwrap();
        let arch_name = format!("{arch:?}").to_lowercase();
        let stem_name = format!("{stem:?}").to_lowercase();
        let out = std::process::Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_export.py"))
            .args([&weights, &probe])
            .args([&arch_name, &stem_name])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("{arch_name}/{stem_name}: {text}");
        assert!(out.status.success(), "{text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
