//! Mixed precision: inside [`autocast`]`(Precision::Bf16, ..)` convolutions and matrix products
//! take bfloat16 operands; everything else (BatchNorm statistics, the standardisation, C, the
//! loss, the weights and the optimiser) stays f32.
//!
//! Like PyTorch's autocast, this is a property of the computation, not of the model: the same
//! module runs in either precision, and its parameters are always f32 (each product casts its
//! operands down and its result back up; the casts are differentiable, so gradients reach the
//! f32 weights).

use burn::module::{Param, ParamId};
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// The precision of convolutions and matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision `{s}` (expected f32 or bf16)")),
        }
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
    /// Each weight's bfloat16 operand, made once per [`autocast`] scope (PyTorch's autocast
    /// cache): both views multiply by the same copy, so their gradients meet in bfloat16 and
    /// reach the f32 weight through one cast.
    static WEIGHTS: RefCell<HashMap<ParamId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Runs `f` with convolutions and matrix products in `precision` (on this thread), then
/// restores the previous setting, also if `f` panics.
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    struct Restore(Precision, HashMap<ParamId, Box<dyn Any>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
            WEIGHTS.with(|w| *w.borrow_mut() = std::mem::take(&mut self.1));
        }
    }
    let _restore = Restore(CURRENT.replace(precision), WEIGHTS.with(|w| w.take()));
    f()
}

/// A weight as a product's operand in the current precision: under bfloat16 made once per
/// [`autocast`] scope by `cast` (a convolution's also lays it out as [`input_layout`] lays out
/// images, in the same copy).
pub(crate) fn weight<const D: usize>(param: &Param<Tensor<D>>, cast: impl FnOnce(Tensor<D>, FloatDType) -> Tensor<D>) -> Tensor<D> {
    if CURRENT.get() == Precision::F32 {
        return param.val();
    }
    let cached = WEIGHTS.with(|w| w.borrow().get(&param.id).and_then(|t| t.downcast_ref::<Tensor<D>>().cloned()));
    cached.unwrap_or_else(|| {
        let t = cast(param.val(), FloatDType::BF16);
        WEIGHTS.with(|w| w.borrow_mut().insert(param.id, Box::new(t.clone())));
        t
    })
}

/// A product's operand in the current precision.
pub(crate) fn operand<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    match CURRENT.get() {
        Precision::F32 => t,
        Precision::Bf16 => t.cast(DType::BF16),
    }
}

/// A convolution's result: left in bfloat16 where the BatchNorm after it takes bfloat16 with f32
/// statistics ([`batch_norm_takes_bf16`](super::batch_norm_takes_bf16), LibTorch, as PyTorch's
/// autocast leaves it), else back in f32.
pub(crate) fn activation<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    match t.dtype() == DType::BF16 && super::batch_norm_takes_bf16(&t) {
        true => t,
        false => result(t),
    }
}

/// Images as the current precision's convolutions take them: under bfloat16 in bfloat16 and,
/// where the backend has layouts, channels-last (tensor cores; PyTorch's `channels_last`).
pub(crate) fn input_layout(images: Tensor<4>) -> Tensor<4> {
    match CURRENT.get() {
        Precision::F32 => images,
        Precision::Bf16 => super::channels_last(images, FloatDType::BF16),
    }
}

/// A product's result back in f32.
pub(crate) fn result<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    match t.dtype() {
        DType::F32 => t,
        _ => t.cast(DType::F32),
    }
}
