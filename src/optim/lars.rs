//! LARS, as in the official Barlow Twins code: layer-wise trust ratio, momentum, two groups;
//! and solo-learn's variant (the LARS paper's trust ratio, LARC's clipping).

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
    #[config(default = "TrustRatio::Update")]
    pub trust_ratio: TrustRatio,
    /// LARC's clipping (solo-learn's `clip_lr`): a weight's rate is min(trust ratio, lr), the
    /// trust ratio taking over only where it is below the scheduled rate.
    #[config(default = false)]
    pub clip_lr: bool,
}

/// How LARS sets a weight's trust ratio q (its step is lr · q · (g + λw)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustRatio {
    /// q = η‖w‖ / ‖g + λw‖, 1 where either norm is 0: facebookresearch/barlowtwins' LARS.
    #[default]
    Update,
    /// q = η‖w‖ / (‖g‖ + λ‖w‖ + 10⁻⁸) (You et al. 2017; solo-learn's and Lightning Bolts'
    /// LARS); where ‖w‖ or ‖g‖ is 0 the step is lr · g, without weight decay.
    Sum,
}

/// ε of the `sum` trust ratio (solo-learn's `eps`).
const EPS: f64 = 1e-8;

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

impl Lars {
    /// A weight's gradient with weight decay, times its trust ratio (clipped at the weights'
    /// rate `lr` with `clip_lr`).
    fn scaled<const D: usize>(&self, p: Tensor<D>, grad: Tensor<D>, lr: f64) -> Tensor<D> {
        let c = &self.config;
        let clip = |q: Tensor<1>| match (c.clip_lr, lr > 0.0) {
            (false, _) => q,
            (true, true) => q.div_scalar(lr).clamp_max(1.0),
            // min(q / 0, 1) = 1, as solo-learn's `min(lars_lr / lr, 1)` on the warm-up's first step.
            (true, false) => q.ones_like(),
        };
        match c.trust_ratio {
            TrustRatio::Update => {
                let dp = crate::ops::add_scaled(grad, p.clone(), c.weight_decay);
                let q = crate::ops::trust_ratio(crate::ops::l2_norm(p), crate::ops::l2_norm(dp.clone()), c.eta);
                dp.mul(clip(q).unsqueeze())
            }
            TrustRatio::Sum => {
                let (p_norm, g_norm) = (crate::ops::l2_norm(p.clone()), crate::ops::l2_norm(grad.clone()));
                let q = p_norm.clone().mul_scalar(c.eta).div(g_norm.clone() + p_norm.clone().mul_scalar(c.weight_decay).add_scalar(EPS));
                // 1 where both norms are positive, else 0: the plain gradient there.
                let both = (p_norm.greater_elem(0.0).float() * g_norm.greater_elem(0.0).float()).unsqueeze::<D>();
                let dp = crate::ops::add_scaled(grad.clone(), p, c.weight_decay).mul(clip(q).unsqueeze());
                dp * both.clone() + grad * (both.neg().add_scalar(1.0))
            }
        }
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
        let (dp, lr) = if D == 1 { (grad, lr * c.lr_biases) } else { (self.scaled(p.clone(), grad, lr * c.lr_weights), lr * c.lr_weights) };
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
