//! A training run as one worker of a data-parallel job sees it: which share of each batch is
//! its own, whether it writes the run's files (rank 0 does), the step, and how a failure on
//! any worker ends the whole job with a message instead of a hang.

use super::step::{Arithmetic, broadcast_module, train_step};
use crate::collective::{Comm, prefix, watchdog};
use crate::collective::meter::{self, Totals};
use crate::config::Config;
use crate::loss::Loss;
use crate::methods::{Batchwide, Crops, Model};
use crate::store::checkpoint::Checkpoint;
use crate::train::Progress;
use anyhow::{Context, Result, bail};
use burn::optim::ModuleOptimizer;
use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Job {
    pub comm: Comm,
    batch: Batchwide,
    /// From the end of the first step (compilation, tuning and first-touch excluded): when,
    /// the collectives' counts then, and the steps since.
    clock: RefCell<Option<Clock>>,
}

type Clock = (Instant, Vec<(meter::Kind, Totals)>, usize);

impl Job {
    /// Joins `comm`'s job for a run of `config` writing into `out`: checks that the global batch
    /// divides over the workers and starts the collective watchdog.
    pub fn new(comm: Comm, config: &Config, out: &Path) -> Result<Job> {
        let (workers, batch) = (comm.size(), config.optim.batch_size);
        if batch % workers != 0 {
            bail!(
                "optim.batch_size = {batch} is the global batch, split evenly over the {workers} processes of this \
                 job; {batch} is not a multiple of {workers}. Choose a batch size that is (say {}), or another \
                 number of processes",
                (batch / workers).max(1) * workers
            );
        }
        if workers > 1 {
            let timeout = (config.train.dist_timeout > 0).then(|| Duration::from_secs(config.train.dist_timeout));
            let note = format!(
                "The last checkpoint, {}, is intact: go on with the same launch command plus --resume.",
                crate::train::checkpoint_path(out).display()
            );
            watchdog::start(timeout, &prefix(comm.as_ref()), note);
            if comm.rank() == 0 {
                eprintln!(
                    "data-parallel: {}; global batch {batch} = {workers} × {}{}",
                    comm.describe(),
                    batch / workers,
                    if config.train.sync_bn { ", BatchNorm over the global batch" } else { ", encoder BatchNorm per process" }
                );
            }
        }
        let batch = Batchwide::new(comm.clone(), config.train.sync_bn);
        Ok(Job { comm, batch, clock: RefCell::new(None) })
    }

    /// Whether this worker writes the run's files and prints its progress: rank 0.
    pub fn writes(&self) -> bool {
        self.comm.rank() == 0
    }

    /// The backend to run on: with several workers on one machine, each takes the GPU of its
    /// node-local rank (`cuda` → `cuda:<local rank>`); an explicit index is kept.
    pub fn backend(&self, name: &str) -> String {
        let local = self.comm.local_rank();
        match name {
            "cuda" | "tch-cuda" if self.comm.local_size() > 1 => format!("{name}:{local}"),
            // `auto` is CUDA's device 0 when there is a GPU: here, the node-local rank's.
            "auto" if self.comm.local_size() > 1 && cfg!(feature = "cuda") => {
                match crate::backend::device("auto") {
                    Ok(device) if !crate::backend::is_cpu(&device) => format!("cuda:{local}"),
                    _ => name.to_string(),
                }
            }
            _ => name.to_string(),
        }
    }

    /// One optimisation step on this worker's share of the global batch ([`train_step`]), timed
    /// for the job's report of what its collectives cost.
    pub fn step(&self, model: Model, optim: &mut ModuleOptimizer, crops: Crops, arithmetic: Arithmetic, at: Progress) -> (Model, Loss) {
        let result = train_step(&self.batch, model, optim, crops, arithmetic, at);
        let mut clock = self.clock.borrow_mut();
        match clock.as_mut() {
            None => *clock = Some((Instant::now(), meter::snapshot(), 0)),
            Some((_, _, steps)) => *steps += 1,
        }
        result
    }

    /// The same model on every worker: rank 0's.
    ///
    /// burn draws a parameter's initial values when it is first read, from the device's
    /// generator: in the order of the first forward pass in one process, but in the order of
    /// serialisation on a rank 0 that broadcasts. Reading every parameter here, in module order,
    /// on every job size, gives one process and rank 0 the same initial weights.
    pub fn share_model(&self, model: Model) -> Result<Model> {
        materialise(&model);
        broadcast_module(model, &self.comm, 0)
    }

    /// The checkpoint at `path` as rank 0 reads it, on every worker (the run directory need
    /// not be shared between machines).
    pub fn read_checkpoint(&self, path: &Path) -> Result<Checkpoint> {
        if self.comm.size() == 1 {
            return Checkpoint::read(path);
        }
        let mut bytes = match self.writes() {
            true => crate::files::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?,
            false => vec![],
        };
        self.comm.broadcast(&mut bytes, 0);
        Checkpoint::parse(&bytes).with_context(|| format!("checkpoint {} is not usable", path.display()))
    }

    /// Runs `f` on rank 0 only (the kNN monitor, checkpoints, pictures); the other workers wait
    /// for it, without the watchdog's time limit. `None` on the others.
    pub fn on_writer<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<Option<R>> {
        let _untimed = watchdog::untimed();
        let result = if self.writes() { Some(f()?) } else { None };
        self.comm.barrier();
        Ok(result)
    }

    /// What the collectives cost per step since the end of the first one, for the log.
    pub fn costs(&self) -> Option<String> {
        let clock = self.clock.borrow();
        let (since, before, steps) = clock.as_ref()?;
        if self.comm.size() == 1 || *steps == 0 {
            return None;
        }
        let seconds = since.elapsed().as_secs_f64();
        let (comm, staging) = meter::since(before);
        let n = *steps as f64;
        Some(format!(
            "{steps} steps of {:.3}s: collectives {:.3}s per step ({:.0}%, {:.2} MB, incl. waiting for the slowest \
             worker), host staging {:.3}s ({:.0}%)",
            seconds / n,
            comm.seconds / n,
            100.0 * comm.seconds / seconds,
            comm.bytes as f64 / n / 1e6,
            staging.seconds / n,
            100.0 * staging.seconds / seconds,
        ))
    }
}

/// Ends the job on every worker when this one failed: a worker that just returned its error
/// would leave the others waiting in their next collective for ever.
pub fn conclude<T>(comm: &Comm, result: Result<T>) -> Result<T> {
    match result {
        Err(e) if comm.size() > 1 => {
            eprintln!("{}error: {e:#}\n{}ending every process of the job", prefix(comm.as_ref()), prefix(comm.as_ref()));
            comm.abort(1)
        }
        other => other,
    }
}

/// Draws every lazily initialised parameter of `module`, in module order.
fn materialise<M: burn::module::Module>(module: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}
