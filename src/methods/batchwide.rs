//! Batch-wide quantities of a loss over this process's images or over every process's: what a
//! method's forward pass asks for where its loss reads more than one image at a time.
//!
//! In a one-process job every call here is the plain one-process computation, bit for bit; with
//! W processes each returns the global batch's value on every process, differentiably, so that
//! the gradients averaged over the processes are the global batch's.

use crate::collective::tensor::{all_gather, all_reduce_sum, all_reduce_sum_detached};
use crate::collective::{ChannelSync, Comm, Single};
use crate::loss::{BN_EPS, cross_correlation, standardize};
use crate::model::{Projector, ResNet};
use crate::ops::modules::synchronised;
use burn::tensor::Tensor;
use std::sync::Arc;

/// How the processes' shares of a sum are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// A differentiable sum: its backward sums the gradient over the processes. The exact
    /// gradient of one process holding the global batch.
    Differentiable,
    /// The official Barlow Twins code's in-place `dist.all_reduce(c)`: the right C, but each
    /// process's gradient flows back only through its own share, so every gradient behind C comes
    /// out W times too small. Kept for the negative test and for comparing with PyTorch runs.
    Detached,
}

/// The processes a batch is spread over, and how batch statistics cross them.
#[derive(Clone, Debug)]
pub struct Batchwide {
    pub comm: Comm,
    /// Encoder BatchNorm over the global batch too (the projector's always is).
    pub sync_bn: bool,
    pub reduce: Reduce,
}

impl Batchwide {
    pub fn new(comm: Comm, sync_bn: bool) -> Batchwide {
        Batchwide { comm, sync_bn, reduce: Reduce::Differentiable }
    }

    /// One process holding the whole batch.
    pub fn single() -> Batchwide {
        Batchwide::new(Arc::new(Single), false)
    }

    pub fn workers(&self) -> usize {
        self.comm.size()
    }

    /// What BatchNorm layers synchronise through: nothing in a one-process job, which then runs
    /// exactly the one-process code.
    pub fn sync(&self) -> Option<ChannelSync> {
        (self.comm.size() > 1).then(|| self.comm.clone() as ChannelSync)
    }

    /// What the encoder's BatchNorm synchronises through.
    pub fn encoder_sync(&self) -> Option<ChannelSync> {
        if self.sync_bn { self.sync() } else { None }
    }

    /// Projector outputs `z` (`n×D`) of this process's images: the encoder's BatchNorm over the
    /// global batch with `sync_bn`, the projector's always.
    pub fn project(&self, backbone: &ResNet, projector: &Projector, images: Tensor<4>) -> Tensor<2> {
        let features = synchronised(self.encoder_sync(), || backbone.forward(images));
        synchronised(self.sync(), || projector.forward(features))
    }

    /// The cross-correlation of the global batch, C = Σ_processes ẑ_Aᵀ ẑ_B / N_global (`D×D`,
    /// the same on every process), with ẑ standardised over the global batch, from this
    /// process's projector outputs `z_a`, `z_b` (`n×D`, the same `n` on every process).
    pub fn cross_correlation(&self, z_a: Tensor<2>, z_b: Tensor<2>) -> Tensor<2> {
        let [n, _] = z_a.dims();
        let Some(sync) = self.sync() else {
            return cross_correlation(standardize(z_a), standardize(z_b), n);
        };
        let standardize = |z| crate::ops::sync_bn::standardize(z, BN_EPS, sync.clone());
        let share = cross_correlation(standardize(z_a), standardize(z_b), n * self.workers());
        match self.reduce {
            Reduce::Differentiable => all_reduce_sum(share, &self.comm),
            Reduce::Detached => all_reduce_sum_detached(share, &self.comm),
        }
    }

    /// Every process's rows of `z` in rank order (`W·n×D`); its backward sums the gradient over
    /// the processes, as the sum of C does.
    pub fn gather(&self, z: Tensor<2>) -> Tensor<2> {
        all_gather(z, &self.comm)
    }

    /// Every process's keys (`views × n × D` each) as one global batch in rank order
    /// (`views × W·n × D`), in one all-gather, without gradient.
    pub fn gather_keys(&self, keys: Tensor<3>) -> Tensor<3> {
        if self.workers() == 1 {
            return keys;
        }
        let [views, n, d] = keys.dims();
        let rows = keys.detach().swap_dims(0, 1).reshape([n, views * d]);
        all_gather(rows, &self.comm).reshape([self.workers() * n, views, d]).swap_dims(0, 1)
    }

    /// The mean over the processes of a value each computed on its shard (detached).
    pub fn mean(&self, t: Tensor<1>) -> Tensor<1> {
        if self.workers() == 1 {
            return t;
        }
        all_reduce_sum(t.detach(), &self.comm) / self.workers() as f64
    }
}
