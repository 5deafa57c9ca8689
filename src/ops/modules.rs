//! burn's `Conv2d`, `Linear` and `BatchNorm` modules run through barlow's kernels
//! ([`super::conv2d`], [`super::batch_norm_train`]) and the current [`precision`](super::precision).

use super::precision::{activation, operand, result, weight};
use crate::collective::ChannelSync;
use burn::module::{Module, ModuleMapper, Param, RunningState};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;
use std::cell::RefCell;

/// `conv.forward(x)`, in the current precision.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    // barlow's convolutions are bias-free with explicit padding; others keep burn's module.
    let (None, PaddingConfig2d::Explicit(top, left, bottom, right)) = (&conv.bias, &conv.padding) else {
        return conv.forward(x);
    };
    let (top, left, bottom, right) = (*top, *left, *bottom, *right);
    let options = ConvOptions::new_with_padding(conv.stride, [(top, bottom), (left, right)], conv.dilation, conv.groups);
    activation(super::conv2d(operand(x), weight(&conv.weight, super::channels_last), options))
}

/// `linear.forward(x)` for a batch of rows, in the current precision.
pub fn linear(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    let y = result(operand(x).matmul(weight(&linear.weight, |w, dtype| w.cast(dtype))));
    match &linear.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    }
}

thread_local! {
    static SYNC: RefCell<Option<ChannelSync>> = const { RefCell::new(None) };
}

/// Runs `f` with every training-mode [`batch_norm`] on this thread synchronised through `sync`
/// (SyncBatchNorm: the statistics of all workers' batches together), then restores the previous
/// setting. `None` runs them on this process's batch alone.
pub fn synchronised<R>(sync: Option<ChannelSync>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<ChannelSync>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SYNC.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(SYNC.with(|s| s.replace(sync)));
    f()
}

/// `bn.forward(x)`, then a ReLU when `then_relu` (fused into the kernel when training).
///
/// In training mode the running statistics move as PyTorch's (and the official code's) do:
/// `running ← (1 − momentum)·running + momentum·batch`, with the batch's *unbiased* variance
/// (burn's own BatchNorm uses the biased one, which makes evaluation-mode features differ).
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>, then_relu: bool) -> Tensor<D> {
    normalize(bn, x, then_relu, true)
}

/// [`batch_norm`] without the affine transform, as PyTorch's `BatchNorm1d(affine=False)`: no
/// gradient reaches γ and β, so they stay 1 and 0 (SimSiam's projector output).
pub fn batch_norm_affine_free<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    normalize(bn, x, false, false)
}

fn normalize<const D: usize>(bn: &BatchNorm, x: Tensor<D>, then_relu: bool, affine: bool) -> Tensor<D> {
    let training = x.device().is_autodiff() && bn.training.is_enabled();
    if !training {
        let y = bn.forward(x);
        return if then_relu { relu(y) } else { y };
    }
    let device = x.device();
    let sync = SYNC.with(|s| s.borrow().clone());
    // The unbiased correction of the running variance counts every worker's values.
    let mut count = [(x.shape().num_elements() / x.dims()[1]) as f64];
    if let Some(sync) = &sync {
        sync.sum(&mut count);
    }
    let unbiased = count[0] / (count[0].max(2.0) - 1.0);
    let (gamma, beta) = match affine {
        true => (bn.gamma.val(), bn.beta.val()),
        false => (bn.gamma.val().detach(), bn.beta.val().detach()),
    };
    let running = (swap(&bn.running_mean, None).to_device(&device), swap(&bn.running_var, None).to_device(&device));
    let (output, (mean, var)) =
        super::batch_norm_running(x, gamma, beta, bn.epsilon, then_relu, sync, running, bn.momentum, unbiased);
    swap(&bn.running_mean, Some(mean.detach()));
    swap(&bn.running_var, Some(var.detach()));
    output
}

/// Puts `value` in a running statistic's place and returns what was there; `None` leaves a
/// placeholder (uninitialised, one element) until the moved statistic comes back. Held by nothing
/// else meanwhile, LibTorch moves the statistic in place (as PyTorch moves its buffers) instead
/// of on a copy; and unlike burn's `RunningState::update`, which keeps a value per thread and
/// averages them at the next read, this costs no division (barlow's workers are processes, one
/// model per thread).
fn swap(state: &RunningState<Tensor<1>>, value: Option<Tensor<1>>) -> Tensor<1> {
    struct Swap(Option<Tensor<1>>);
    impl ModuleMapper for Swap {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, old, mapper) = param.consume();
            let new = self.0.take().unwrap_or_else(|| Tensor::empty([1], &old.device()));
            self.0 = Some(Tensor::from_dispatch(old.into_dispatch()));
            Param::from_mapped_value(id, Tensor::from_dispatch(new.into_dispatch()), mapper)
        }
    }
    // A clone shares the module's cell: what the mapper puts there, the module holds.
    let mut swap = Swap(value);
    let _ = state.clone().map(&mut swap);
    swap.0.expect("a running statistic is one tensor")
}
