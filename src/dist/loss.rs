//! The Barlow Twins loss over every worker's batch: C = Σ_workers ẑ_Aᵀ ẑ_B / N_global, with ẑ
//! standardised over the global batch, and the same loss on every worker.

use crate::collective::ChannelSync;
use crate::collective::Comm;
use crate::collective::tensor::{all_reduce_sum, all_reduce_sum_detached};
use crate::loss::BN_EPS;
use crate::methods::barlow::{BarlowLoss, barlow_loss_from_c, cross_correlation as local_correlation};
use burn::tensor::Tensor;

/// How the workers' shares of C are summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// A differentiable sum: its backward sums the gradient over the workers. The exact
    /// gradient of one process holding the global batch.
    Differentiable,
    /// The official code's in-place `dist.all_reduce(c)`: the right C, but each worker's
    /// gradient flows back only through its own share, so every gradient behind C comes out
    /// W times too small. Kept for the negative test and for comparing with PyTorch runs.
    Detached,
}

/// The cross-correlation of the global batch (`D×D`, identical on every worker) from this
/// worker's projector outputs `z_a`, `z_b` (`n×D`, the same `n` on every worker).
pub fn cross_correlation(z_a: Tensor<2>, z_b: Tensor<2>, comm: &Comm, reduce: Reduce) -> Tensor<2> {
    let [n, _] = z_a.dims();
    if comm.size() == 1 {
        return local_correlation(crate::loss::standardize(z_a), crate::loss::standardize(z_b), n);
    }
    let sync: ChannelSync = comm.clone();
    let (z_a, z_b) = (crate::ops::sync_bn::standardize(z_a, BN_EPS, sync.clone()), crate::ops::sync_bn::standardize(z_b, BN_EPS, sync));
    let share = local_correlation(z_a, z_b, n * comm.size());
    match reduce {
        Reduce::Differentiable => all_reduce_sum(share, comm),
        Reduce::Detached => all_reduce_sum_detached(share, comm),
    }
}

/// The Barlow Twins loss of the global batch, on every worker; in a one-process job exactly
/// [`crate::methods::barlow::barlow_loss`].
pub fn barlow_loss(z_a: Tensor<2>, z_b: Tensor<2>, lambda: f64, comm: &Comm, reduce: Reduce) -> BarlowLoss {
    barlow_loss_from_c(cross_correlation(z_a, z_b, comm, reduce), lambda)
}
