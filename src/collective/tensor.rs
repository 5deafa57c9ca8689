//! Differentiable collectives on tensors, for every backend: the tensor goes to host memory,
//! the workers combine it there, and the result comes back to the device it came from.
//!
//! - [`all_reduce_sum`]: every worker gets Σ_workers x. Its gradient is again a sum over the
//!   workers: each worker's output feeds that worker's loss, so the gradient of x on one worker
//!   is the sum of what every worker's loss says about its output. (PyTorch's in-place
//!   `dist.all_reduce`, which the official Barlow Twins code applies to C, is not differentiable:
//!   each worker then back-propagates only its own loss through its own share, and with the
//!   gradients averaged over the workers, every gradient that passes through C comes out W times
//!   too small. lightly found and fixed this, their issue 1977.)
//! - [`all_gather`]: every worker gets all workers' rows, in rank order. Its gradient is this
//!   worker's rows of the summed gradient.
//!
//! Host staging costs a device round trip per call, but works on flex, cuda, wgpu and tch alike;
//! a GPU-resident path (NCCL) would replace [`Collectives`]'s default bodies for `Cube`.

// burn marks its LibTorch backend deprecated; barlow still runs on it.
#![cfg_attr(feature = "tch", allow(deprecated))]

use super::ChannelSync;
use super::Comm;
use super::meter::{self, Kind};
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Backend, DType, Dispatch, TensorMetadata, backend_extension};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Slice, Tensor, TensorData};

/// The collectives as tensor operations; the default bodies stage through host memory and
/// serve every backend.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "cubecl", feature = "cpu")),
    Autodiff
)]
pub trait Collectives: Backend {
    /// Σ over the workers of `x`, on every worker (same shape, dtype and device as `x`).
    fn collective_all_reduce(x: FloatTensor<Self>, sum: ChannelSync) -> FloatTensor<Self> {
        let (shape, dtype, device) = (x.shape(), x.dtype(), x.device());
        let mut values = to_host(Self::float_into_data(x), shape.num_elements());
        meter::time(Kind::AllReduce, 0, || sum.sum_f32(&mut values));
        from_host::<Self>(values, shape, dtype, &device)
    }

    /// Every worker's `x` (equal shapes), concatenated along dimension 0 in rank order.
    fn collective_all_gather(x: FloatTensor<Self>, comm: Comm) -> FloatTensor<Self> {
        let (shape, dtype, device) = (x.shape(), x.dtype(), x.device());
        let values = to_host(Self::float_into_data(x), shape.num_elements());
        let all = comm.all_gather_f32(&values);
        let mut dims = shape.to_vec();
        dims[0] *= comm.size();
        from_host::<Self>(all, dims.into(), dtype, &device)
    }
}

fn to_host(
    data: impl std::future::Future<Output = Result<TensorData, burn::backend::ExecutionError>> + Send,
    len: usize,
) -> Vec<f32> {
    meter::time(Kind::Staging, len * 4, || {
        let data = burn::tensor::try_read_sync(data)
            .expect("reading a tensor back for a collective: this backend cannot read synchronously")
            .expect("reading a tensor back for a collective");
        data.convert::<f32>().try_into_vec::<f32>().expect("f32 values")
    })
}

fn from_host<B: Backend>(values: Vec<f32>, shape: burn::tensor::Shape, dtype: DType, device: &B::Device) -> FloatTensor<B> {
    meter::time(Kind::Staging, values.len() * 4, || {
        B::float_from_data(TensorData::new(values, shape).convert_dtype(dtype), device)
    })
}

#[cfg(feature = "flex")]
impl Collectives for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl Collectives for burn::backend::NdArray {}
#[cfg(feature = "tch")]
#[allow(deprecated)]
impl Collectives for burn::backend::LibTorch {}
#[cfg(any(feature = "cubecl", feature = "cpu"))]
impl Collectives for burn::backend::Cube {}

type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;

#[derive(Debug)]
struct AllReduceBackward;

impl<B: Backend + Collectives> Backward<B, 1> for AllReduceBackward {
    type State = ChannelSync;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::collective_all_reduce(grad, ops.state));
        }
    }
}

#[derive(Debug)]
struct AllGatherBackward;

impl<B: Backend + Collectives> Backward<B, 1> for AllGatherBackward {
    /// The job, and this worker's rows of the output.
    type State = (Comm, std::ops::Range<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (comm, rows) = ops.state;
        if let [Some(parent)] = ops.parents {
            let summed = B::collective_all_reduce(grad, comm.clone());
            let mut slices = vec![Slice::from(..); summed.shape().num_dims()];
            slices[0] = Slice::from(rows);
            grads.register::<B>(parent.id, B::float_slice(summed, &slices));
        }
    }
}

impl<B: Backend + Collectives, C: CheckpointStrategy> Collectives for Autodiff<B, C> {
    fn collective_all_reduce(x: FloatTensor<Self>, sum: ChannelSync) -> FloatTensor<Self> {
        // Compute-bound: the result is kept, never recomputed, so each collective runs once.
        match AllReduceBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y: Primitive<B> = B::collective_all_reduce(x.into_primitive(), sum.clone());
                prep.finish(sum, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::collective_all_reduce(x.into_primitive(), sum)),
        }
    }

    fn collective_all_gather(x: FloatTensor<Self>, comm: Comm) -> FloatTensor<Self> {
        let rows = x.shape()[0];
        let mine = comm.rank() * rows..(comm.rank() + 1) * rows;
        match AllGatherBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::collective_all_gather(x.into_primitive(), comm.clone());
                prep.finish((comm, mine), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::collective_all_gather(x.into_primitive(), comm)),
        }
    }
}

/// Σ over the workers of `x`, differentiable (its gradient is the sum of the workers'
/// gradients). In a one-process job, `x` itself.
pub fn all_reduce_sum<const D: usize>(x: Tensor<D>, comm: &Comm) -> Tensor<D> {
    if comm.size() == 1 {
        return x;
    }
    let sum: ChannelSync = comm.clone();
    reduce_with(x, sum)
}

/// [`all_reduce_sum`] through any [`ChannelSum`](super::ChannelSum) (what a
/// synchronised BatchNorm is handed).
pub fn reduce_with<const D: usize>(x: Tensor<D>, sum: ChannelSync) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as Collectives>::collective_all_reduce(x.into_dispatch(), sum))
}

/// Every worker's `x` (each `n × ...`, the same `n` on every worker) stacked in rank order
/// (`W·n × ...`), differentiable: the gradient of this worker's `x` is its rows of the summed
/// gradient. In a one-process job, `x` itself.
pub fn all_gather<const D: usize>(x: Tensor<D>, comm: &Comm) -> Tensor<D> {
    if comm.size() == 1 {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as Collectives>::collective_all_gather(x.into_dispatch(), comm.clone()))
}

/// The gradient of a non-differentiable sum (for the negative test and the record): the
/// forward value of [`all_reduce_sum`], but the gradient flows only into this worker's own `x`,
/// as with PyTorch's in-place `dist.all_reduce`.
pub fn all_reduce_sum_detached<const D: usize>(x: Tensor<D>, comm: &Comm) -> Tensor<D> {
    let summed = all_reduce_sum(x.clone().detach(), comm);
    x.clone() + (summed - x).detach()
}
