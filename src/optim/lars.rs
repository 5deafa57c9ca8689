//! LARS, as in the official Barlow Twins code: layer-wise trust ratio, momentum, two groups.

use burn::config::Config;
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct LarsConfig {
    /// Learning rate of weights per 256 images (paper: 0.2).
    #[config(default = 0.2)]
    pub lr_weights: f64,
    /// Learning rate of biases and BatchNorm parameters per 256 images (paper: 0.0048).
    #[config(default = 0.0048)]
    pub lr_biases: f64,
    #[config(default = 1.5e-6)]
    pub weight_decay: f64,
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Trust coefficient η.
    #[config(default = 0.001)]
    pub eta: f64,
}

/// LARS update of one parameter. Biases and BatchNorm parameters (the rank-1 tensors, as the
/// official `exclude_bias_and_norm` decides) get neither weight decay nor the trust ratio.
#[derive(Clone, Debug)]
pub struct Lars {
    config: LarsConfig,
}

#[derive(Clone)]
pub struct LarsState<const D: usize> {
    /// Momentum buffer `mu`.
    pub mu: Tensor<D>,
}

// burn's `#[derive(RecordState)]` only resolves inside burn-optim, so the one leaf is named here.
impl<const D: usize> RecordState for LarsState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "mu", self.mu.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "mu")?;
        Some(LarsState { mu: Tensor::from_data(data, device) })
    }
}

impl LarsConfig {
    pub fn build(&self) -> Lars {
        Lars { config: self.clone() }
    }

    /// A whole-module optimizer; `step` takes the schedule's factor (batch/256 · warm-up/cosine).
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.build())
    }
}

impl Optimizer for Lars {
    type State<const D: usize> = LarsState<D>;

    /// `lr` is the schedule's factor; each group multiplies it by its own base rate.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        p: Tensor<D>,
        grad: Tensor<D>,
        state: Option<LarsState<D>>,
    ) -> (Tensor<D>, Option<LarsState<D>>) {
        let c = &self.config;
        let (dp, lr) = if D == 1 {
            (grad, lr * c.lr_biases)
        } else {
            let dp = crate::ops::add_scaled(grad, p.clone(), c.weight_decay);
            let param_norm = crate::ops::l2_norm(p.clone());
            let update_norm = crate::ops::l2_norm(dp.clone());
            let q = crate::ops::trust_ratio(param_norm, update_norm, c.eta);
            (dp.mul(q.unsqueeze()), lr * c.lr_weights)
        };
        let mu = match state {
            Some(LarsState { mu }) => mu.mul_scalar(c.momentum) + dp,
            None => dp,
        };
        (crate::ops::add_scaled(p, mu.clone(), -lr), Some(LarsState { mu }))
    }

    fn to_device<const D: usize>(state: LarsState<D>, device: &Device) -> LarsState<D> {
        LarsState { mu: state.mu.to_device(device) }
    }
}
