//! The projector MLP: (Linear → BN → ReLU) × k → Linear, no biases, as in the official code.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use crate::ops::modules::{batch_norm, linear};
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct ProjectorConfig {
    /// Width of the encoder features the projector reads.
    pub d_input: usize,
    /// Output widths of each Linear layer, the last one being D (paper: 8192-8192-8192).
    #[config(default = "vec![8192, 8192, 8192]")]
    pub sizes: Vec<usize>,
}

#[derive(Module, Debug)]
pub struct Projector {
    pub hidden: Vec<(Linear, BatchNorm)>,
    pub out: Linear,
}

impl ProjectorConfig {
    pub fn init(&self, device: &Device) -> Projector {
        assert!(!self.sizes.is_empty(), "projector needs at least one layer");
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let mut d = self.d_input;
        let (last, hidden) = self.sizes.split_last().expect("non-empty");
        let hidden = hidden
            .iter()
            .map(|&h| {
                let layer = (linear(d, h), BatchNormConfig::new(h).init(device));
                d = h;
                layer
            })
            .collect();
        Projector { hidden, out: linear(d, *last) }
    }
}

impl Projector {
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for (layer, bn) in &self.hidden {
            x = batch_norm(bn, linear(layer, x), true);
        }
        linear(&self.out, x)
    }
}
