//! Barlow Twins = encoder (ResNet) + projector, trained by the loss on two views.

pub mod projector;
pub mod resnet;

pub use projector::{Projector, ProjectorConfig};
pub use resnet::{Arch, ResNet, ResNetConfig, Stem};

use crate::loss::{BarlowLoss, LAMBDA, barlow_loss};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct BarlowTwinsConfig {
    pub encoder: ResNetConfig,
    /// Projector widths; the last is the embedding dimension D.
    #[config(default = "vec![8192, 8192, 8192]")]
    pub projector: Vec<usize>,
    #[config(default = "LAMBDA")]
    pub lambda: f64,
}

#[derive(Module, Debug)]
pub struct BarlowTwins {
    pub backbone: ResNet,
    pub projector: Projector,
    pub lambda: f64,
}

impl BarlowTwinsConfig {
    pub fn init(&self, device: &Device) -> BarlowTwins {
        // The encoder ends at the pooled features: the paper replaces `fc` by the projector.
        let encoder = self.encoder.clone().with_num_classes(None);
        let projector = ProjectorConfig::new(encoder.feature_dim())
            .with_sizes(self.projector.clone())
            .init(device);
        BarlowTwins { backbone: encoder.init(device), projector, lambda: self.lambda }
    }
}

impl BarlowTwins {
    /// Projector outputs `z` (`N×D`) of one view.
    pub fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    /// The loss of two views `y1`, `y2` of the same images, each `N×3×H×W`.
    pub fn forward(&self, y1: Tensor<4>, y2: Tensor<4>) -> BarlowLoss {
        barlow_loss(self.project(y1), self.project(y2), self.lambda)
    }
}

/// Parameters that training updates, as PyTorch's `sum(p.numel() for p in model.parameters())`
/// counts them: burn's `num_params` also counts BatchNorm's running statistics.
pub fn trainable_params<M: Module>(module: &M) -> usize {
    #[derive(Default)]
    struct Count {
        leaf: String,
        total: usize,
    }
    impl burn::module::ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.leaf = name.to_string();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if !matches!(self.leaf.as_str(), "running_mean" | "running_var") {
                self.total += param.shape().num_elements();
            }
        }
    }
    let mut count = Count::default();
    module.visit(&mut count);
    count.total
}
