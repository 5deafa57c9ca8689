//! The heads on the encoder — projector, expander, predictor: MLPs of (Linear → BN → ReLU) × k →
//! Linear, by default without biases, as in the official Barlow Twins code.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use crate::ops::modules::{batch_norm, batch_norm_affine_free, linear};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct ProjectorConfig {
    /// Width of the features the head reads.
    pub d_input: usize,
    /// Output widths of each Linear layer, the last one being D (paper: 8192-8192-8192).
    #[config(default = "vec![8192, 8192, 8192]")]
    pub sizes: Vec<usize>,
    /// BatchNorm after each hidden Linear; without it the Linear has a bias instead (the MLP
    /// heads of SimCLR and MoCo v2).
    #[config(default = true)]
    pub hidden_norm: bool,
    /// A bias on the last Linear (BYOL's heads, SimSiam's predictor, SimCLR's and MoCo's).
    #[config(default = false)]
    pub out_bias: bool,
    /// BatchNorm without affine parameters on the output (SimSiam's projector).
    #[config(default = false)]
    pub out_norm: bool,
}

#[derive(Module, Debug)]
pub struct Projector {
    pub hidden: Vec<(Linear, Option<BatchNorm>)>,
    pub out: Linear,
    pub out_norm: Option<BatchNorm>,
}

impl ProjectorConfig {
    pub fn init(&self, device: &Device) -> Projector {
        assert!(!self.sizes.is_empty(), "projector needs at least one layer");
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let mut d = self.d_input;
        let (last, hidden) = self.sizes.split_last().expect("non-empty");
        let hidden = hidden
            .iter()
            .map(|&h| {
                let layer = linear(d, h, !self.hidden_norm);
                let norm = self.hidden_norm.then(|| BatchNormConfig::new(h).init(device));
                d = h;
                (layer, norm)
            })
            .collect();
        let out_norm = self.out_norm.then(|| BatchNormConfig::new(*last).init(device));
        Projector { hidden, out: linear(d, *last, self.out_bias), out_norm }
    }
}

impl Projector {
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for (layer, bn) in &self.hidden {
            x = match bn {
                Some(bn) => batch_norm(bn, linear(layer, x), true),
                None => relu(linear(layer, x)),
            };
        }
        let z = linear(&self.out, x);
        match &self.out_norm {
            Some(bn) => batch_norm_affine_free(bn, z),
            None => z,
        }
    }

    /// Width of the output.
    pub fn d_out(&self) -> usize {
        self.out.weight.dims()[1]
    }
}
