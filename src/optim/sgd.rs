//! SGD with momentum and weight decay as PyTorch's `torch.optim.SGD` (no dampening, no Nesterov),
//! the optimiser of MoCo and SimSiam; and [`Fixed`], a parameter group whose learning rate does
//! not follow the schedule (SimSiam's predictor).

use burn::config::Config;
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct SgdConfig {
    /// Learning rate of weights per 256 images.
    #[config(default = 0.05)]
    pub lr_weights: f64,
    /// Learning rate of biases and BatchNorm parameters (the rank-1 tensors) per 256 images.
    #[config(default = 0.05)]
    pub lr_biases: f64,
    /// L2 penalty on every parameter, as PyTorch's SGD applies it.
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    /// No weight decay for the biases and BatchNorm parameters (the rank-1 tensors), as DINO's
    /// `get_params_groups` leaves them out.
    #[config(default = false)]
    pub exclude_bias_and_norm: bool,
    #[config(default = 0.9)]
    pub momentum: f64,
}

#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
}

#[derive(Clone)]
pub struct SgdState<const D: usize> {
    /// The momentum buffer.
    pub buf: Tensor<D>,
}

impl<const D: usize> RecordState for SgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "buf", self.buf.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "buf")?;
        Some(SgdState { buf: Tensor::from_data(data, device) })
    }
}

impl SgdConfig {
    pub fn build(&self) -> Sgd {
        Sgd { config: self.clone() }
    }

    /// A whole-module optimizer; `step` takes the schedule's factor.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.build())
    }
}

impl Optimizer for Sgd {
    type State<const D: usize> = SgdState<D>;

    /// `d = g + wd·p;  buf = μ·buf + d (buf = d at first);  p ← p − lr·buf`, `lr` being the
    /// schedule's factor times the group's base rate (`wd` 0 for rank-1 tensors with
    /// `exclude_bias_and_norm`).
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        p: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SgdState<D>>,
    ) -> (Tensor<D>, Option<SgdState<D>>) {
        let c = &self.config;
        let base = if D == 1 { c.lr_biases } else { c.lr_weights };
        let decay = if D == 1 && c.exclude_bias_and_norm { 0.0 } else { c.weight_decay };
        let d = if decay == 0.0 { grad } else { grad + p.clone().mul_scalar(decay) };
        let buf = match state {
            Some(SgdState { buf }) => buf.mul_scalar(c.momentum) + d,
            None => d,
        };
        (p - buf.clone().mul_scalar(lr * base), Some(SgdState { buf }))
    }

    fn to_device<const D: usize>(state: SgdState<D>, device: &Device) -> SgdState<D> {
        SgdState { buf: state.buf.to_device(device) }
    }
}

/// An optimiser that runs at a fixed factor of its base rates whatever the schedule says:
/// SimSiam's `--fix-pred-lr` (the predictor stays at the initial learning rate).
#[derive(Clone, Debug)]
pub struct Fixed<O> {
    pub inner: O,
    pub factor: f64,
}

impl<O: Optimizer> Optimizer for Fixed<O> {
    type State<const D: usize> = O::State<D>;

    fn step<const D: usize>(
        &self,
        _lr: LearningRate,
        p: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        self.inner.step(self.factor, p, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        O::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::Optimizer;
    use burn::tensor::{Tensor, TensorData};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// By hand: wd 0.5, lr 0.1 × 0.2, p = (3, 4), g = (1, −2). A weight decays either way; a bias
    /// decays unless `exclude_bias_and_norm`.
    #[test]
    fn biases_and_norms_skip_weight_decay_when_excluded() {
        let device = crate::backend::device("flex").unwrap();
        let (p, g) = ([3.0f32, 4.0], [1.0f32, -2.0]);
        let decayed = [3.0 - 0.02 * (1.0 + 0.5 * 3.0), 4.0 - 0.02 * (-2.0 + 0.5 * 4.0)];
        let plain = [3.0 - 0.02 * 1.0, 4.0 + 0.02 * 2.0];
        for (exclude, bias_want) in [(false, decayed), (true, plain)] {
            let sgd = SgdConfig::new().with_lr_weights(0.2).with_lr_biases(0.2).with_weight_decay(0.5).with_exclude_bias_and_norm(exclude).build();
            let bias = |v: [f32; 2]| Tensor::<1>::from_data(TensorData::from(v), &device);
            let weight = |v: [f32; 2]| Tensor::<2>::from_data(TensorData::from([v]), &device);
            let (b, _) = sgd.step(0.1, bias(p), bias(g), None);
            let (w, _) = sgd.step(0.1, weight(p), weight(g), None);
            for (got, want) in [(values(b), bias_want), (values(w), decayed)] {
                assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "exclude {exclude}: {got:?} vs {want:?}");
            }
        }
    }
}
