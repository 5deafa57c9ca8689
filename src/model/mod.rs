//! The networks: the encoder (ResNet) and the heads on it (projector, predictor). How a method
//! puts them together is `crate::methods`.

pub mod projector;
pub mod resnet;

pub use projector::{Projector, ProjectorConfig};
pub use resnet::{Arch, ResNet, ResNetConfig, Stem};

use burn::module::Module;
use burn::tensor::Tensor;

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
