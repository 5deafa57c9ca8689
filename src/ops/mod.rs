//! Fast kernels for what dominates a ResNet training step — convolution and BatchNorm with their
//! gradients — as a burn backend extension: ours on `Flex`, PyTorch's on `LibTorch`, burn's own
//! ops elsewhere.
//!
//! burn's CPU backend leaves the convolution weight gradient and BatchNorm's training forward
//! and backward to generic compositions of tensor ops (transposing copies, one GEMM per input
//! channel, a dozen elementwise passes). [`Kernels`] names the operations of a training step
//! this concerns; `Flex` runs them as a few large GEMMs and two-pass reductions (`conv`, `batch_norm`),
//! `LibTorch` runs PyTorch's own kernels for them (`libtorch`), every other backend keeps burn's
//! own op (the trait's default bodies), and `Autodiff` records one backward step per operation
//! that calls the gradient kernels.

// burn marks its LibTorch backend deprecated; barlow still runs on it.
#![cfg_attr(feature = "tch", allow(deprecated))]

mod autodiff;
pub mod batch_norm;
mod columns;
mod elementwise;
#[cfg(feature = "flex")]
pub mod conv;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "tch")]
pub mod libtorch;
pub mod modules;
pub mod precision;
pub mod sync_bn;
mod transpose;
mod units;
mod winograd;

use crate::collective::ChannelSync;
use burn::backend::{Backend, Dispatch, DispatchDevice, ExtensionType, TensorMetadata, backend_extension, get_or_init_device_settings};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use std::borrow::Cow;

/// The operations of a convolutional training step that barlow implements itself on the CPU.
///
/// The default bodies are burn's own operations: what every backend without a faster
/// implementation runs.
#[backend_extension(Flex: cfg(feature = "flex"), LibTorch: cfg(feature = "tch"), Autodiff)]
pub trait Kernels: Backend {
    /// `conv2d(x, weight)` without bias.
    fn conv2d_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The gradient of [`conv2d_forward`](Kernels::conv2d_forward) with respect to `x`.
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    /// The gradient of [`conv2d_forward`](Kernels::conv2d_forward) with respect to `weight`.
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }

    /// `relu(a + b)`: the end of a residual block.
    fn add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(Self::float_add(a, b))
    }

    /// The same values in `dtype`, laid out channels-last (NHWC) in memory, as tensor cores want
    /// bfloat16 convolutions: one copy for both on LibTorch, the only backend with layouts;
    /// elsewhere the cast alone.
    fn channels_last(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        Self::float_cast(x, dtype)
    }

    /// `values` (row-major, of `shape`) as a tensor on the device of `like`, which says only
    /// where.
    fn upload(like: FloatTensor<Self>, values: &[f32], shape: [usize; 4]) -> FloatTensor<Self> {
        Self::float_from_data(TensorData::new(values.to_vec(), shape), &like.device())
    }

    /// `running·(1 − momentum) + batch·momentum·scale`: a BatchNorm's running statistic after a
    /// batch (`scale` corrects the variance to the unbiased one).
    fn running_update(running: FloatTensor<Self>, batch: FloatTensor<Self>, momentum: f64, scale: f64) -> FloatTensor<Self> {
        let kept = Self::float_mul_scalar(running, (1.0 - momentum).into());
        Self::float_add(kept, Self::float_mul_scalar(batch, (momentum * scale).into()))
    }

    /// `a + alpha·b`.
    fn add_scaled(a: FloatTensor<Self>, b: FloatTensor<Self>, alpha: f64) -> FloatTensor<Self> {
        Self::float_add(a, Self::float_mul_scalar(b, alpha.into()))
    }

    /// `‖t‖₂` over every element, as a one-element tensor.
    fn l2_norm(t: FloatTensor<Self>) -> FloatTensor<Self> {
        let squares = Self::float_mul(t.clone(), t);
        Self::float_sqrt(Self::float_sum(squares))
    }

    /// LARS's trust ratio from the two norms (one-element tensors): `η·‖p‖/‖dp‖`, and 1 where
    /// either norm is 0.
    fn trust_ratio(param_norm: FloatTensor<Self>, update_norm: FloatTensor<Self>, eta: f64) -> FloatTensor<Self> {
        let bools = get_or_init_device_settings::<Self>(&param_norm.device()).bool_dtype;
        let either_zero = Self::bool_or(
            Self::float_lower_equal_elem(param_norm.clone(), 0.0.into(), bools),
            Self::float_lower_equal_elem(update_norm.clone(), 0.0.into(), bools),
        );
        let q = Self::float_div(Self::float_mul_scalar(param_norm, eta.into()), update_norm);
        Self::float_mask_fill(q, either_zero, 1.0.into())
    }

    /// The gradient through a ReLU whose output was `output`: `grad` where `output > 0`, else 0.
    fn relu_grad(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu_backward(output, grad)
    }

    /// Training-mode BatchNorm over the batch and every axis after the channels, then a ReLU
    /// when `relu`: `(output, mean, saved)`; with `sync`, over every worker's batch. `saved` is
    /// the spread in the form this backend's backward takes (the biased variance, unless
    /// [`batch_norm_variance`](Kernels::batch_norm_variance) says otherwise).
    fn batch_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert!(sync.is_none(), "synchronised BatchNorm has no kernel on this backend");
        let r = Self::batch_norm_train(x, gamma, beta, epsilon);
        let output = if relu { Self::relu(r.output) } else { r.output };
        (output, r.mean, r.variance)
    }

    /// [`batch_norm_forward`](Kernels::batch_norm_forward) on this worker's batch, which also
    /// moves the running statistics towards the batch's: `(output, mean, saved, running)`.
    fn batch_norm_forward_running(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        #[extension_type] running: Running<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, Running<Self>) {
        forward_then_running(x, gamma, beta, epsilon, relu, running)
    }

    /// The biased variance from [`batch_norm_forward`](Kernels::batch_norm_forward)'s `saved`.
    fn batch_norm_variance(saved: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        let _ = epsilon;
        saved
    }

    /// Gradients `(x, gamma, beta)` of [`batch_norm_forward`](Kernels::batch_norm_forward),
    /// from its `mean` and `saved`; `output` is its output (read only under a fused ReLU).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert!(sync.is_none(), "synchronised BatchNorm has no kernel on this backend");
        let grad = if relu { Self::relu_backward(output, output_grad) } else { output_grad };
        let r = Self::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
        (r.x_grad, r.gamma_grad, r.beta_grad)
    }
}

/// A BatchNorm's running statistics, and how far each batch moves them:
/// `running ← (1 − momentum)·running + momentum·batch`, the batch's variance made unbiased by
/// the factor `unbiased` (PyTorch's convention; burn's own BatchNorm keeps the biased one).
#[derive(ExtensionType)]
pub struct Running<B: Backend> {
    pub mean: FloatTensor<B>,
    pub var: FloatTensor<B>,
    pub momentum: f64,
    pub unbiased: f64,
}

/// [`Kernels::batch_norm_forward_running`] composed: the forward, then each running statistic's update.
fn forward_then_running<B: Kernels>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    relu: bool,
    running: Running<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Running<B>) {
    let (output, mean, saved) = B::batch_norm_forward(x, gamma, beta, epsilon, relu, None);
    let variance = B::batch_norm_variance(saved.clone(), epsilon);
    let Running { mean: running_mean, var: running_var, momentum, unbiased } = running;
    let moved = Running {
        mean: B::running_update(running_mean, mean.clone(), momentum, 1.0),
        var: B::running_update(running_var, variance, momentum, unbiased),
        momentum,
        unbiased,
    };
    (output, mean, saved, moved)
}


/// Whether `tensor` lives on a backend with kernels of its own (possibly under autodiff).
fn on_fast_backend<const D: usize>(tensor: &Tensor<D>) -> bool {
    on_libtorch(&tensor.device()) || on_flex(tensor)
}

/// Whether `device` is LibTorch's (possibly under autodiff).
fn on_libtorch(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    if matches!(device.clone().inner().as_dispatch(), DispatchDevice::LibTorch(_)) {
        return true;
    }
    let _ = device;
    false
}

/// Whether `tensor` lives on `Flex`, whose BatchNorm kernels also synchronise over workers.
fn on_flex<const D: usize>(tensor: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    if matches!(tensor.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        return true;
    }
    let _ = tensor;
    false
}

/// `conv2d(x, weight)` without bias: our kernels on the CPU, burn's op elsewhere.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if !on_fast_backend(&x) {
        return burn::tensor::module::conv2d(x, weight, None, options);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::conv2d_forward(x.into_dispatch(), weight.into_dispatch(), options))
}

/// `x` in `dtype`, laid out channels-last where the backend has layouts (LibTorch): one copy
/// where a cast and a re-layout would be two.
pub fn channels_last(x: Tensor<4>, dtype: FloatDType) -> Tensor<4> {
    if !on_fast_backend(&x) {
        return x.cast(dtype);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::channels_last(x.into_dispatch(), dtype))
}

/// A batch of images (row-major, of `shape`) on `device`: borrowed (a loader's pooled buffer) or
/// owned (then burn's CPU backends take it without a copy). On LibTorch one copy, and on a GPU
/// through pinned memory, so the transfer does not wait for the GPU: from pageable memory
/// LibTorch's copy first waits for every queued kernel, once per step.
pub fn upload<'a>(values: impl Into<Cow<'a, [f32]>>, shape: [usize; 4], device: &Device) -> Tensor<4> {
    let values = values.into();
    if on_libtorch(device) {
        let like = Tensor::<1>::empty([0], device).into_dispatch();
        return Tensor::from_dispatch(<Dispatch as Kernels>::upload(like, &values, shape));
    }
    Tensor::from_data(TensorData::new(values.into_owned(), shape), device)
}

/// A BatchNorm's running statistic after a batch, `running·(1 − momentum) + batch·momentum·scale`
/// (one kernel on LibTorch instead of three; not differentiated).
fn running_update(running: Tensor<1>, batch: Tensor<1>, momentum: f64, scale: f64) -> Tensor<1> {
    if !on_fast_backend(&running) {
        return running.mul_scalar(1.0 - momentum).add(batch.mul_scalar(momentum * scale));
    }
    let (running, batch) = (running.into_dispatch(), batch.into_dispatch());
    Tensor::from_dispatch(<Dispatch as Kernels>::running_update(running, batch, momentum, scale))
}

/// Training-mode BatchNorm (then ReLU when `relu`) that also moves the running statistics
/// `running = (mean, variance)` towards the batch's by `momentum` (the variance's made unbiased by
/// `unbiased`): `(output, running)`. On LibTorch one `native_batch_norm` does both, as in PyTorch.
#[allow(clippy::too_many_arguments)] // batch_norm_train's, and the running statistics'
pub fn batch_norm_running<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
    sync: Option<ChannelSync>,
    running: (Tensor<1>, Tensor<1>),
    momentum: f64,
    unbiased: f64,
) -> (Tensor<D>, (Tensor<1>, Tensor<1>)) {
    if sync.is_some() || !on_fast_backend(&x) {
        let r = batch_norm_train(x, gamma, beta, epsilon, relu, sync);
        let mean = running_update(running.0, r.mean.detach(), momentum, 1.0);
        let var = running_update(running.1, r.variance.detach(), momentum, unbiased);
        return (r.output, (mean, var));
    }
    let running = Running { mean: running.0.into_dispatch(), var: running.1.into_dispatch(), momentum, unbiased };
    let (output, _, _, moved) = <Dispatch as Kernels>::batch_norm_forward_running(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
        running,
    );
    (Tensor::from_dispatch(output), (Tensor::from_dispatch(moved.mean), Tensor::from_dispatch(moved.var)))
}

/// `a + alpha·b` (LARS's weight decay and update): one kernel on LibTorch, as PyTorch's
/// `add(.., alpha)`; burn's two elsewhere.
pub fn add_scaled<const D: usize>(a: Tensor<D>, b: Tensor<D>, alpha: f64) -> Tensor<D> {
    if !on_fast_backend(&a) || on_flex(&a) {
        return a + b.mul_scalar(alpha);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::add_scaled(a.into_dispatch(), b.into_dispatch(), alpha))
}

/// `‖t‖₂` over every element (LARS's trust ratio): one kernel on LibTorch (PyTorch's `norm`),
/// burn's square, sum and root elsewhere.
pub fn l2_norm<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    if !on_fast_backend(&t) || on_flex(&t) {
        return t.square().sum().sqrt();
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::l2_norm(t.into_dispatch()))
}

/// LARS's trust ratio `η·‖p‖/‖dp‖`, and 1 where either norm is 0, kept on the device (no host
/// sync): five kernels on LibTorch, where burn's comparisons would take seven.
pub fn trust_ratio(param_norm: Tensor<1>, update_norm: Tensor<1>, eta: f64) -> Tensor<1> {
    if !on_fast_backend(&param_norm) {
        let either_zero = param_norm.clone().min_pair(update_norm.clone()).lower_equal_elem(0.0);
        return param_norm.mul_scalar(eta).div(update_norm).mask_fill(either_zero, 1.0);
    }
    let (p, u) = (param_norm.into_dispatch(), update_norm.into_dispatch());
    Tensor::from_dispatch(<Dispatch as Kernels>::trust_ratio(p, u, eta))
}

/// Whether BatchNorm here takes bfloat16 input with f32 statistics and parameters (LibTorch's
/// kernels, as under PyTorch's autocast), so that a bfloat16 convolution's result need not go
/// back to f32 before it.
pub fn batch_norm_takes_bf16<const D: usize>(tensor: &Tensor<D>) -> bool {
    on_fast_backend(tensor) && !on_flex(tensor)
}

/// `relu(a + b)` (a residual block's sum): one pass on every core on the CPU, burn's two ops
/// elsewhere.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if !on_fast_backend(&a) || a.shape() != b.shape() {
        return burn::tensor::activation::relu(a + b);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::add_relu(a.into_dispatch(), b.into_dispatch()))
}

/// The output and batch statistics of training-mode BatchNorm (`relu` fuses the ReLU after it).
pub struct BatchNormOutput<const D: usize> {
    pub output: Tensor<D>,
    pub mean: Tensor<1>,
    pub variance: Tensor<1>,
}

/// Training-mode BatchNorm (then ReLU when `relu`): our kernels on the CPU, burn's ops elsewhere.
/// With `sync`, the statistics are those of every worker's batch together (SyncBatchNorm).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
    sync: Option<ChannelSync>,
) -> BatchNormOutput<D> {
    match sync {
        Some(sync) if !on_flex(&x) => {
            // Statistics summed over workers as tensor ops: in f32 whatever the input.
            let x = precision::result(x);
            return sync_bn::batch_norm_train(x, gamma, beta, epsilon, relu, sync);
        }
        _ => {}
    }
    if !on_fast_backend(&x) {
        let r = burn::tensor::module::batch_norm_train(x, gamma, beta, epsilon);
        let output = if relu { burn::tensor::activation::relu(r.output) } else { r.output };
        return BatchNormOutput { output, mean: r.mean, variance: r.variance };
    }
    let (output, mean, saved) = <Dispatch as Kernels>::batch_norm_forward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
        sync,
    );
    BatchNormOutput {
        output: Tensor::from_dispatch(output),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(<Dispatch as Kernels>::batch_norm_variance(saved, epsilon)),
    }
}
