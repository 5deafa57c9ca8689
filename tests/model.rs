//! The encoder and projector: shapes, parameter counts against torchvision, module paths.

mod common;

use barlow::methods::{MethodConfig, Model, SelfSupervised};
use barlow::methods::barlow::LAMBDA;
use barlow::model::{Arch, ResNetConfig, Stem};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Distribution, Tensor};

#[test]
fn parameter_counts_match_torchvision() {
    let device = burn::tensor::Device::default();
    // torchvision.models.resnet18() / resnet34() / resnet50(), fc included.
    for (arch, count) in [(Arch::Resnet18, 11_689_512), (Arch::Resnet34, 21_797_672), (Arch::Resnet50, 25_557_032)] {
        let net = ResNetConfig::new(arch).with_num_classes(Some(1000)).init(&device);
        assert_eq!(barlow::model::trainable_params(&net), count, "{arch:?}");
    }
}

#[test]
fn resnet18_cifar_gives_512_features_per_image() {
    let device = common::device();
    let net = ResNetConfig::new(Arch::Resnet18).with_stem(Stem::Cifar).init(&device);
    let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(net.forward(x).dims(), [3, 512]);
}

#[test]
fn resnet50_imagenet_stem_gives_2048_features() {
    let device = burn::tensor::Device::default();
    let net = ResNetConfig::new(Arch::Resnet50).with_width(8).init(&device);
    let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    // Width 8 instead of 64 keeps the test fast; features are 8 · 8 · 4.
    assert_eq!(net.forward(x).dims(), [2, 256]);
}

#[test]
fn projector_outputs_d_and_has_no_biases() {
    let device = common::device();
    let encoder = ResNetConfig::new(Arch::Resnet18).with_stem(Stem::Cifar).with_width(8);
    let Model::Barlow(model) = MethodConfig::barlow(encoder, vec![32, 32, 16], LAMBDA).init(&device) else { unreachable!() };
    assert!(model.projector.out.bias.is_none());
    assert!(model.projector.hidden.iter().all(|(l, _)| l.bias.is_none()));
    let x = Tensor::<4>::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(model.project(x).dims(), [4, 16]);
}

struct Paths(Vec<String>, Vec<String>);
impl ModuleVisitor for Paths {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.1.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.1.pop();
    }
    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
        self.0.push(self.1.join("."));
    }
}

#[test]
fn module_paths_follow_torchvision_keys() {
    let device = burn::tensor::Device::default();
    let net = ResNetConfig::new(Arch::Resnet50).with_width(8).with_num_classes(Some(10)).init(&device);
    let mut paths = Paths(vec![], vec![]);
    net.visit(&mut paths);
    // BatchNorm's weight/bias are burn's gamma/beta; the export renames those leaves.
    for key in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.conv3.weight",
        "layer1.0.bn3.running_mean", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
        "layer4.2.conv2.weight", "fc.weight", "fc.bias"]
    {
        assert!(paths.0.iter().any(|p| p == key), "no parameter at `{key}` in {:?}", &paths.0[..8]);
    }
}

#[test]
fn zero_init_residual_starts_last_bn_of_each_block_at_zero() {
    let device = burn::tensor::Device::default();
    let net = ResNetConfig::new(Arch::Resnet18).with_width(8).init(&device);
    for block in net.layer1.iter().chain(&net.layer4) {
        assert_eq!(block.bn2.gamma.val().abs().sum().into_scalar::<f32>(), 0.0);
        assert_eq!(block.bn1.gamma.val().sum().into_scalar::<f32>(), block.bn1.gamma.dims()[0] as f32);
    }
}

/// `model.zero_init_residual`: each block's last BatchNorm starts at γ = 0 (the default, the
/// official code's) or at 1 (torchvision's default, as solo-learn builds its ResNets); the
/// stem's BatchNorm starts at 1 either way.
#[test]
fn zero_init_residual_sets_the_blocks_last_batch_norm() {
    let device = common::device();
    let gammas = |set: &str| {
        let config = barlow::config::Config::load("byol-cifar10", &[set.to_string(), "model.width=4".into()]).unwrap();
        let net = config.model().encoder.init(&device);
        let mean = |t: Tensor<1>| t.mean().into_scalar::<f32>();
        (mean(net.layer1[0].bn2.gamma.val()), mean(net.bn1.gamma.val()))
    };
    assert_eq!(gammas("model.zero_init_residual=true"), (0.0, 1.0));
    assert_eq!(gammas("model.zero_init_residual=false"), (1.0, 1.0));
    let err = format!("{:#}", barlow::config::Config::load("cifar10", &["model.zero_init_residual=2".into()]).unwrap_err());
    assert!(err.contains("boolean"), "{err}");
}

/// `cifar-pad2` (solo-learn's CIFAR stem) gives 34×34 maps after its 3×3 convolution where
/// `cifar` keeps 32×32, and the same pooled features.
#[test]
fn the_cifar_pad2_stem_pads_by_two() {
    let device = common::device();
    let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    for (stem, side) in [(Stem::Cifar, 32), (Stem::CifarPad2, 34)] {
        let net = ResNetConfig::new(Arch::Resnet18).with_stem(stem).with_width(4).init(&device);
        assert_eq!(net.conv1.forward(x.clone()).dims(), [2, 4, side, side], "{stem:?}");
        assert_eq!(net.forward(x.clone()).dims(), [2, 32]);
    }
}
