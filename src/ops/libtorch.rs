//! [`Kernels`] on burn's LibTorch backend: the kernels PyTorch's own autograd calls.
//!
//! burn's generic ops build a convolution's weight gradient as a convolution with batch and
//! channels swapped (a kernel the size of the image, which cuDNN and oneDNN run slowly) and
//! BatchNorm out of a dozen elementwise passes and reductions. Here the forward passes are
//! LibTorch's `convolution` and `native_batch_norm`, and the gradients its
//! `convolution_backward` and `native_batch_norm_backward`, through `libtorch.cpp` (tch's
//! bindings leave those two out).

#![allow(deprecated)] // burn marks its LibTorch backend deprecated; barlow still runs on it

use super::{Kernels, Running};
use crate::collective::ChannelSync;
use burn::backend::libtorch::TchTensor;
use burn::backend::LibTorch;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::tensor::FloatDType;
use std::ffi::{CStr, c_char, c_int};
use torch_sys::C_tensor;

unsafe extern "C" {
    fn barlow_conv2d_backward(
        grad_output: *mut C_tensor,
        input: *mut C_tensor,
        weight: *mut C_tensor,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        input_grad: c_int,
        weight_grad: c_int,
        out_input: *mut *mut C_tensor,
        out_weight: *mut *mut C_tensor,
    ) -> *mut c_char;
    #[allow(clippy::too_many_arguments)]
    fn barlow_batch_norm_backward(
        grad_output: *mut C_tensor,
        input: *mut C_tensor,
        weight: *mut C_tensor,
        mean: *mut C_tensor,
        invstd: *mut C_tensor,
        epsilon: f64,
        out_input: *mut *mut C_tensor,
        out_weight: *mut *mut C_tensor,
        out_bias: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn barlow_add_scaled(a: *mut C_tensor, b: *mut C_tensor, alpha: f64, out: *mut *mut C_tensor) -> *mut c_char;
    fn barlow_channels_last(x: *mut C_tensor, dtype: c_int, out: *mut *mut C_tensor) -> *mut c_char;
    fn barlow_upload(like: *mut C_tensor, values: *const f32, shape: *const i64, out: *mut *mut C_tensor) -> *mut c_char;
    fn barlow_allow_tf32(allow: c_int) -> *mut c_char;
    fn barlow_profiler_start(cuda: c_int) -> *mut c_char;
    fn barlow_profiler_stop(path: *const c_char) -> *mut c_char;
}

/// Panics with LibTorch's message when a shim call failed, as tch's own calls do (a backend op
/// has no error to return).
fn check(error: *mut c_char) {
    if let Some(message) = message(error) {
        panic!("LibTorch: {message}");
    }
}

/// The shim's error message, if it returned one (and frees it).
fn message(error: *mut c_char) -> Option<String> {
    if error.is_null() {
        return None;
    }
    // SAFETY: the shim returns a strdup'ed, NUL-terminated message or null.
    let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    unsafe { libc::free(error.cast()) };
    Some(message)
}

fn ptr(t: &TchTensor) -> *mut C_tensor {
    t.tensor.as_ptr() as *mut C_tensor
}

/// A tensor the shim created and hands over.
fn owned(handle: *mut C_tensor) -> TchTensor {
    assert!(!handle.is_null(), "the LibTorch shim returned no tensor");
    // SAFETY: the shim hands over a heap-allocated at::Tensor, which tch now owns and frees.
    TchTensor::new(unsafe { tch::Tensor::from_ptr(handle) })
}

/// Whether LibTorch may multiply f32 in TF32 on tensor cores (cuDNN convolutions and cuBLAS
/// products). LibTorch allows it for convolutions by default; barlow turns it off for f32.
pub fn allow_tf32(allow: bool) {
    check(unsafe { barlow_allow_tf32(c_int::from(allow)) });
}

/// Runs `f` under PyTorch's profiler (CPU operations, and CUDA kernels when `cuda`) and saves
/// its trace (Chrome's JSON trace format) to `path`.
pub fn profile<R>(path: &std::path::Path, cuda: bool, f: impl FnOnce() -> R) -> anyhow::Result<R> {
    use anyhow::Context;
    let name = std::ffi::CString::new(path.to_string_lossy().as_bytes()).context("a trace path without NUL")?;
    if let Some(m) = message(unsafe { barlow_profiler_start(c_int::from(cuda)) }) {
        anyhow::bail!("PyTorch's profiler did not start: {m}");
    }
    let out = f();
    if let Some(m) = message(unsafe { barlow_profiler_stop(name.as_ptr()) }) {
        anyhow::bail!("PyTorch's profiler could not save {}: {m}", path.display());
    }
    anyhow::ensure!(path.exists(), "the profiler wrote no trace to {}", path.display());
    Ok(out)
}

/// A convolution's gradient with respect to its input (`input`) or its weight, from LibTorch's
/// `convolution_backward`; `None` for asymmetric padding, which LibTorch's convolutions do not take.
fn conv_backward(x: &TchTensor, weight: &TchTensor, grad: &TchTensor, options: &ConvOptions<2>, input: bool) -> Option<TchTensor> {
    let [(top, bottom), (left, right)] = options.padding;
    if top != bottom || left != right {
        return None;
    }
    let (padding, stride, dilation) = ([top as i64, left as i64], options.stride.map(|s| s as i64), options.dilation.map(|d| d as i64));
    let (mut wanted, mut other) = (std::ptr::null_mut(), std::ptr::null_mut());
    let (dx, dw) = match input {
        true => (&mut wanted, &mut other),
        false => (&mut other, &mut wanted),
    };
    check(unsafe {
        barlow_conv2d_backward(
            ptr(grad),
            ptr(x),
            ptr(weight),
            stride.as_ptr(),
            padding.as_ptr(),
            dilation.as_ptr(),
            options.groups as i64,
            c_int::from(input),
            c_int::from(!input),
            dx,
            dw,
        )
    });
    Some(owned(wanted))
}

impl Kernels for LibTorch {
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        conv_backward(&x, &weight, &output_grad, &options, true)
            .unwrap_or_else(|| LibTorch::conv2d_x_backward(x, weight, output_grad, options))
    }

    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        conv_backward(&x, &weight, &output_grad, &options, false)
            .unwrap_or_else(|| LibTorch::conv2d_weight_backward(x, weight, output_grad, options))
    }

    fn channels_last(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        // The shim's codes (tch keeps its own private).
        let code = match dtype {
            FloatDType::F64 => 0,
            FloatDType::F32 | FloatDType::Flex32 => 1,
            FloatDType::F16 => 2,
            FloatDType::BF16 => 3,
        };
        let mut out = std::ptr::null_mut();
        check(unsafe { barlow_channels_last(ptr(&x), code, &mut out) });
        owned(out)
    }

    fn upload(like: FloatTensor<Self>, values: &[f32], shape: [usize; 4]) -> FloatTensor<Self> {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{} values for shape {shape:?}", values.len());
        let (shape, mut out) = (shape.map(|d| d as i64), std::ptr::null_mut());
        check(unsafe { barlow_upload(ptr(&like), values.as_ptr(), shape.as_ptr(), &mut out) });
        owned(out)
    }

    fn running_update(running: FloatTensor<Self>, batch: FloatTensor<Self>, momentum: f64, scale: f64) -> FloatTensor<Self> {
        // lerp: running + momentum·(batch − running), one kernel.
        let target = match scale == 1.0 {
            true => batch.tensor,
            false => batch.tensor * scale,
        };
        TchTensor::new(running.tensor.lerp(&target, momentum))
    }

    fn add_scaled(a: FloatTensor<Self>, b: FloatTensor<Self>, alpha: f64) -> FloatTensor<Self> {
        let mut out = std::ptr::null_mut();
        check(unsafe { barlow_add_scaled(ptr(&a), ptr(&b), alpha, &mut out) });
        owned(out)
    }

    fn l2_norm(t: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(t.tensor.norm().reshape([1]))
    }

    fn trust_ratio(param_norm: FloatTensor<Self>, update_norm: FloatTensor<Self>, eta: f64) -> FloatTensor<Self> {
        // Five kernels, where burn's ops take seven (a comparison in place, then a cast to bool).
        let either_zero = param_norm.tensor.minimum(&update_norm.tensor).le(0.0);
        let mut q = (&param_norm.tensor * eta) / &update_norm.tensor;
        let _ = q.masked_fill_(&either_zero, 1.0);
        TchTensor::new(q)
    }

    fn relu_grad(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(output.tensor.threshold_backward(&grad.tensor, 0.0))
    }

    fn batch_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert!(sync.is_none(), "synchronised BatchNorm runs as tensor ops on LibTorch");
        let no_stats: Option<&tch::Tensor> = None;
        let (mut y, mean, invstd) =
            x.tensor.native_batch_norm(Some(&gamma.tensor), Some(&beta.tensor), no_stats, no_stats, true, 0.0, epsilon);
        if relu {
            let _ = y.relu_();
        }
        // Kept as LibTorch saves it for its backward: 1/√(var + ε).
        (TchTensor::new(y), TchTensor::new(mean), TchTensor::new(invstd))
    }

    fn batch_norm_forward_running(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        running: Running<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, Running<Self>) {
        // LibTorch moves the running statistics in place, inside its BatchNorm kernels (with the
        // unbiased variance, as barlow's `unbiased` does): on copies where anything else holds
        // their storage (an evaluation copy, a checkpoint being written), as burn-tch decides
        // for its own in-place operations.
        let count = x.tensor.numel() / x.tensor.size()[1] as usize;
        if count < 2 {
            // LibTorch's n/(n − 1) would divide by zero where barlow's factor is guarded.
            return super::forward_then_running(x, gamma, beta, epsilon, relu, running);
        }
        let Running { mean, var, momentum, unbiased } = running;
        // LibTorch's own factor, n/(n − 1), is barlow's without synchronisation (only this path).
        assert!((unbiased - count as f64 / (count as f64 - 1.0)).abs() < 1e-9, "unbiased {unbiased} for {count} values");
        let own = |t: TchTensor| match t.can_mut() {
            true => t.tensor,
            false => {
                // One kernel (tch's `copy()` would zero the new tensor first).
                let mut c = t.tensor.empty_like();
                c.copy_(&t.tensor);
                c
            }
        };
        let (running_mean, running_var) = (own(mean), own(var));
        let (mut y, mean, invstd) = x.tensor.native_batch_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            Some(&running_mean),
            Some(&running_var),
            true,
            momentum,
            epsilon,
        );
        if relu {
            let _ = y.relu_();
        }
        let moved = Running { mean: TchTensor::new(running_mean), var: TchTensor::new(running_var), momentum, unbiased };
        (TchTensor::new(y), TchTensor::new(mean), TchTensor::new(invstd), moved)
    }

    fn batch_norm_variance(invstd: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        TchTensor::new(invstd.tensor.pow_tensor_scalar(-2.0) - epsilon)
    }

    fn batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        invstd: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        assert!(sync.is_none(), "synchronised BatchNorm runs as tensor ops on LibTorch");
        let grad = match relu {
            true => Self::relu_grad(output, output_grad),
            false => output_grad,
        };
        let (mut dx, mut dgamma, mut dbeta) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        check(unsafe {
            barlow_batch_norm_backward(
                ptr(&grad),
                ptr(&x),
                ptr(&gamma),
                ptr(&mean),
                ptr(&invstd),
                epsilon,
                &mut dx,
                &mut dgamma,
                &mut dbeta,
            )
        });
        (owned(dx), owned(dgamma), owned(dbeta))
    }
}
