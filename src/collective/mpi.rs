//! [`Collective`] over MPI (rsmpi): the job that `mpirun -np N` or `srun` started, host buffers
//! only (`MPI_Allreduce` on memory every backend can copy to), so it runs with any backend.

use super::ChannelSum;
use super::Collective;
use super::meter::{self, Kind};
use super::watchdog;
use anyhow::{Result, bail};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::{Threading, Universe};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use std::sync::Mutex;

/// Elements per MPI call: counts are C ints, and the send copy stays bounded (64 MiB of f32).
const CHUNK: usize = 1 << 24;

pub struct Mpi {
    inner: Mutex<Inner>,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    library: String,
}

struct Inner {
    world: SimpleCommunicator,
    /// Finalises MPI when the last handle goes.
    _universe: Universe,
}

// SAFETY: MPI is initialised for serialised calls from any thread (`Threading::Serialized`), and
// every call goes through `inner`'s mutex, so no two threads are ever inside MPI at once.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl Mpi {
    /// Initialises MPI (once per process); without a launcher, a one-rank world.
    pub fn init() -> Result<Mpi> {
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized) else {
            bail!("MPI was already initialised in this process");
        };
        if threading < Threading::Serialized {
            bail!("this MPI library gives threading level {threading:?}; barlow needs Serialized (the loader \
                   runs in threads beside the one that calls MPI)");
        }
        let world = universe.world();
        // Processes that share memory are those on one machine: the node-local rank picks a GPU.
        let local = world.split_shared(world.rank());
        let library = mpi::environment::library_version()
            .map(|v| v.lines().next().unwrap_or("").trim().trim_end_matches(',').to_string())
            .unwrap_or_default();
        Ok(Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            library,
            inner: Mutex::new(Inner { world, _universe: universe }),
        })
    }

    fn with<R>(&self, what: &'static str, bytes: usize, kind: Kind, f: impl FnOnce(&SimpleCommunicator) -> R) -> R {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _guard = watchdog::inside(what);
        meter::time(kind, bytes, || f(&inner.world))
    }

    fn all_reduce<T: Equivalence + Copy + Default>(&self, values: &mut [T]) {
        if self.size == 1 || values.is_empty() {
            return;
        }
        let bytes = std::mem::size_of_val(values);
        self.with("an all-reduce", bytes, Kind::AllReduce, |world| {
            let mut send = vec![T::default(); values.len().min(CHUNK)];
            for chunk in values.chunks_mut(CHUNK) {
                let send = &mut send[..chunk.len()];
                send.copy_from_slice(chunk);
                world.all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
        })
    }
}

impl ChannelSum for Mpi {
    fn sum(&self, values: &mut [f64]) {
        self.all_reduce(values);
    }

    fn sum_f32(&self, values: &mut [f32]) {
        self.all_reduce(values);
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn local_size(&self) -> usize {
        self.local_size
    }

    fn all_reduce_f32(&self, values: &mut [f32]) {
        self.all_reduce(values);
    }

    fn all_reduce_f64(&self, values: &mut [f64]) {
        self.all_reduce(values);
    }

    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) {
        if self.size == 1 {
            return;
        }
        self.with("a broadcast", bytes.len(), Kind::Broadcast, |world| {
            let root = world.process_at_rank(root as i32);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            for chunk in bytes.chunks_mut(CHUNK) {
                root.broadcast_into(chunk);
            }
        })
    }

    fn all_gather_f32(&self, local: &[f32]) -> Vec<f32> {
        if self.size == 1 {
            return local.to_vec();
        }
        let mut all = vec![0f32; local.len() * self.size];
        self.with("an all-gather", std::mem::size_of_val(&all[..]), Kind::AllGather, |world| {
            // Counts are per rank: a single call up to the C int limit.
            assert!(all.len() < i32::MAX as usize, "all-gather of {} values is over MPI's count limit", all.len());
            world.all_gather_into(local, &mut all[..]);
        });
        all
    }

    fn barrier(&self) {
        if self.size > 1 {
            self.with("a barrier", 0, Kind::Other, |world| world.barrier());
        }
    }

    fn abort(&self, code: i32) -> ! {
        // Straight to MPI, not through `with`: the mutex may be held by a thread that is stuck.
        // SAFETY: MPI is initialised (an `Mpi` exists) and MPI_Abort may be called from any thread.
        unsafe { mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code) };
        std::process::exit(code)
    }

    fn describe(&self) -> String {
        format!("MPI ({}), {} ranks on this machine of {}", self.library, self.local_size, self.size)
    }
}
