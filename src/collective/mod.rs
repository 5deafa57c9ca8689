//! Talking to the other processes of a job, knowing nothing of what they compute: this
//! process's rank among `size`, host-memory sums (all-reduce), broadcast and all-gather.
//!
//! [`Single`] is the one-process job (every operation a no-op, no MPI needed); [`Mpi`] (feature
//! `mpi`) is a job started by `mpirun` or `srun`; [`ThreadGroup`] runs workers as threads of one
//! process (tests, and a check that needs no MPI). Tensors cross the workers through
//! differentiable extension ops that stage through host memory ([`tensor`]), so every backend
//! (flex, cuda, wgpu, tch) takes part unchanged; a [`Comm`] is also what a synchronised
//! BatchNorm sums its statistics with ([`ChannelSum`]).
//!
//! Where NCCL would go: a GPU-resident implementation of [`Collective`] whose tensor ops skip the
//! host (the NCCL unique id broadcast from rank 0 with [`Collective::broadcast`] over MPI, then
//! `ncclAllReduce` on the device buffers). The trainer sees only [`Comm`]; nothing else changes.

pub mod meter;
#[cfg(feature = "mpi")]
mod mpi;
mod single;
pub mod tensor;
mod threads;
pub mod watchdog;

#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;
pub use single::Single;
pub use tensor::{all_gather, all_reduce_sum};
pub use threads::ThreadGroup;

use std::sync::Arc;

/// Sums per-channel statistics over the workers of a data-parallel job, which makes BatchNorm
/// synchronised: normalised with the statistics of the global batch (SyncBatchNorm). Called on
/// the calling thread, once or twice per BatchNorm and pass, in the same order on every worker.
pub trait ChannelSum: Send + Sync + std::fmt::Debug {
    /// Replaces each value by its sum over all workers.
    fn sum(&self, values: &mut [f64]);

    /// The same for f32 values (tensors on their way through host memory, see [`tensor`]);
    /// by default through [`sum`](ChannelSum::sum) in f64.
    fn sum_f32(&self, values: &mut [f32]) {
        let mut wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        self.sum(&mut wide);
        values.iter_mut().zip(wide).for_each(|(v, w)| *v = w as f32);
    }
}

/// What a synchronised BatchNorm sums its statistics with.
pub type ChannelSync = Arc<dyn ChannelSum>;

/// The workers of a data-parallel job, as one process sees them.
///
/// Every collective operation must be called by every rank, in the same order, with equal
/// lengths (all-gather: equal lengths per rank); results are identical on every rank. Calls come
/// from the training thread only. Extends [`ChannelSum`], so a `Comm` synchronises BatchNorm.
pub trait Collective: ChannelSum {
    /// This process's rank, `0..size`; rank 0 writes the run's files.
    fn rank(&self) -> usize;
    /// Processes in the job.
    fn size(&self) -> usize;
    /// This process's rank among those on its machine: which GPU it takes.
    fn local_rank(&self) -> usize;
    /// Processes on this process's machine (they share its cores).
    fn local_size(&self) -> usize;
    /// Replaces each value by its sum over all ranks.
    fn all_reduce_f32(&self, values: &mut [f32]);
    /// Replaces each value by its sum over all ranks.
    fn all_reduce_f64(&self, values: &mut [f64]);
    /// Makes `bytes` on every rank equal to `bytes` on `root` (any length).
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize);
    /// Every rank's `local`, concatenated in rank order.
    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32>;
    /// Returns once every rank has called it.
    fn barrier(&self);
    /// Ends every process of the job with `code` (after this process has said why).
    fn abort(&self, code: i32) -> !;
    /// What the job runs on, for logs: "one process", "MPI: Open MPI v4.1.4, 2 ranks", ...
    fn describe(&self) -> String;
}

/// A shared handle to the job's collective.
pub type Comm = Arc<dyn Collective>;

/// The job this process belongs to: MPI's world when the binary has the `mpi` feature (a
/// binary started without a launcher is a one-rank world), else a single process — which
/// refuses to start when a launcher started several copies of it, as each would train alone
/// and all would write to the same run directory.
pub fn world() -> anyhow::Result<Comm> {
    #[cfg(feature = "mpi")]
    return Ok(Arc::new(Mpi::init()?));
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(n) = launcher_size().filter(|&n| n > 1) {
            anyhow::bail!(
                "this barlow was started as one of {n} processes by an MPI launcher, but it was built \
                 without MPI: each copy would train alone and write over the others' files. Rebuild with \
                 `cargo build --release --features mpi` (needs `apt-get install libopenmpi-dev openmpi-bin \
                 libclang-dev`), or start one process without mpirun/srun"
            );
        }
        Ok(Arc::new(Single))
    }
}

/// The job size a launcher announced in the environment (Open MPI, MPICH/Hydra, PMIx, Slurm).
pub fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// A label for messages: "" in a one-process job, "rank 1/4: " otherwise.
pub fn prefix(comm: &dyn Collective) -> String {
    match comm.size() {
        1 => String::new(),
        n => format!("rank {}/{n}: ", comm.rank()),
    }
}
