//! Synchronised BatchNorm from tensor operations, for every backend: the statistics of every
//! worker's batch together, through the differentiable all-reduce (so that autodiff derives the
//! synchronised backward pass by itself). On the CPU the kernels of `ops::batch_norm` do the
//! same in two passes; this is the path for the GPU backends and tch.

use super::BatchNormOutput;
use crate::collective::ChannelSync;
use crate::collective::tensor::reduce_with;
use burn::tensor::activation::relu;
use burn::tensor::Tensor;

/// Per-channel mean and biased variance of `x` (`N × C × ...`) over every worker's batch, each
/// shaped `1 × C × 1 …` to broadcast against `x`; and `x` minus the mean.
fn moments<const D: usize>(x: Tensor<D>, sync: &ChannelSync) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let dims = x.dims();
    let mut count = [(dims.iter().product::<usize>() / dims[1]) as f64];
    sync.sum(&mut count);
    let channel_sums = |t: Tensor<D>| (0..D).filter(|&d| d != 1).fold(t, |t, d| t.sum_dim(d));
    // Two passes, as PyTorch's SyncBatchNorm and the one-process BatchNorm: the mean first, then
    // squares around it (the one-pass Σx² − N·mean² loses digits when the mean is large).
    let mean = reduce_with(channel_sums(x.clone()), sync.clone()).div_scalar(count[0]);
    let centred = x - mean.clone();
    let var = reduce_with(channel_sums(centred.clone().square()), sync.clone()).div_scalar(count[0]);
    (mean, var, centred)
}

/// Training-mode BatchNorm (then ReLU when `relu`) with the statistics of every worker's batch.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu_after: bool,
    sync: ChannelSync,
) -> BatchNormOutput<D> {
    let c = x.dims()[1];
    let mut channel_shape = [1; D];
    channel_shape[1] = c;
    let (mean, var, centred) = moments(x, &sync);
    let scale = gamma.reshape(channel_shape).div(var.clone().add_scalar(epsilon).sqrt());
    let output = centred * scale + beta.reshape(channel_shape);
    let output = if relu_after { relu(output) } else { output };
    BatchNormOutput { output, mean: mean.reshape([c]), variance: var.reshape([c]) }
}

/// Standardises each column of `z` (`N × D`) over every worker's rows: BatchNorm without affine
/// parameters (biased variance, ε), as the official code applies to the embeddings before C.
pub fn standardize(z: Tensor<2>, epsilon: f64, sync: ChannelSync) -> Tensor<2> {
    let (_, var, centred) = moments(z, &sync);
    centred.div(var.add_scalar(epsilon).sqrt())
}
