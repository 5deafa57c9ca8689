//! `barlow train`: the pretraining loop with progress, metrics, checkpoints and the kNN monitor,
//! in three parts: start (fresh or resumed), an epoch of steps, and the end of an epoch.

use super::metrics::{EpochRecord, Metrics, StepRecord};
use super::plots;
use super::report::{diverged_advice, knn_monitor, log, progress_bar, short, step_fits};
use super::step::{PendingStats, Progress, StepStats};
use crate::{backend, ops};
use crate::collective;
use crate::config::Config;
use crate::data::{self, Batch, Dataset, Monitor};
use crate::dist::{Arithmetic, Job};
use crate::eval::Accuracy;
use crate::methods::{Crops, Model};
use crate::optim::Schedule;
use crate::store::checkpoint::{self, RunState};
use anyhow::{Context, Result, bail};
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use indicatif::ProgressBar;
use std::path::Path;
use std::time::Instant;

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub epochs: usize,
    pub steps: usize,
    pub last_loss: f64,
    pub knn: Option<Accuracy>,
    /// Whether this invocation saved a checkpoint (a partial epoch is not checkpointed).
    pub saved: bool,
}

/// Trains as `config` says, writing into `out`; with `resume`, continues from `out`'s checkpoint.
pub fn train(config: &Config, out: &Path, resume: bool) -> Result<Summary> {
    train_in(&Job::new(std::sync::Arc::new(collective::Single), config, out)?, config, out, resume)
}

/// [`train`] as one worker of a data-parallel `job` (rank 0 writes the files and prints).
pub fn train_in(job: &Job, config: &Config, out: &Path, resume: bool) -> Result<Summary> {
    let _lock = if job.writes() { Some(super::RunLock::acquire(out)?) } else { None };
    let mut run = Run::start(job, config, out, resume)?;
    let max_steps = config.train.max_steps.unwrap_or(usize::MAX);
    while run.state.epoch < config.optim.epochs && run.steps_here < max_steps {
        // A partial epoch is neither summarised nor checkpointed.
        let Some(totals) = run.epoch(max_steps)? else { break };
        run.end_of_epoch(totals)?;
    }
    if let Some(costs) = job.costs().filter(|_| run.writes) {
        eprintln!("{costs}");
    }
    let saved = run.state.epoch > run.first_epoch;
    Ok(Summary { epochs: run.state.epoch, steps: run.state.step, last_loss: run.last.loss, knn: run.knn, saved })
}

/// A run in progress, as one worker holds it from part to part.
struct Run<'a> {
    job: &'a Job,
    config: &'a Config,
    out: &'a Path,
    /// Whether this worker writes the run's files (rank 0).
    writes: bool,
    device: Device,
    train_set: Dataset,
    monitor: Option<Monitor>,
    schedule: Schedule,
    steps_per_epoch: usize,
    /// Taken by each step and given back by it.
    model: Option<Model>,
    optim: ModuleOptimizer,
    state: RunState,
    metrics: Option<Metrics>,
    /// The batch `correlation.png` is drawn from.
    sample: Option<Batch>,
    last: StepStats,
    knn: Option<Accuracy>,
    /// The epoch this invocation started at, and the steps it has run.
    first_epoch: usize,
    steps_here: usize,
    resumed: bool,
}

/// What an epoch's summary is made of.
struct EpochTotals {
    loss_sum: f64,
    started: Instant,
}

impl<'a> Run<'a> {
    /// The data, the schedule and the model a run starts from (fresh, or `out`'s checkpoint),
    /// the same on every worker; the log opened and the untrained encoder's kNN accuracy taken.
    fn start(job: &'a Job, config: &'a Config, out: &'a Path, resume: bool) -> Result<Run<'a>> {
        let device = backend::device(&job.backend(&config.train.backend))?.autodiff();
        device.seed(config.train.seed);
        let train_set = data::open_train(&config.data)?;
        let monitor = match config.train.knn_every {
            0 => None,
            _ => data::open_monitor(&config.data)?,
        };
        let batch = config.optim.batch_size;
        let steps_per_epoch = train_set.len() / batch;
        if steps_per_epoch == 0 {
            bail!("the dataset has {} images, fewer than one batch of {batch}", train_set.len());
        }
        step_fits(config, batch / job.comm.size())?;
        let schedule = config.schedule(steps_per_epoch);
        let (model, optim, state) = restore(job, config, out, resume, &device, &schedule)?;
        // Every worker starts from rank 0's weights (fresh or resumed).
        let model = job.share_model(model)?;
        let metrics_path = out.join("metrics.jsonl");
        if resume && job.writes() {
            // Steps logged after the checkpoint (by a killed run) are about to be redone.
            super::metrics::truncate_after(&metrics_path, state.step)?;
        }
        let metrics = match job.writes() {
            true => Some(Metrics::open(&metrics_path, resume)?),
            false => None,
        };
        let (first_epoch, writes) = (state.epoch, job.writes());
        let mut run = Run { job, config, out, writes, device, train_set, monitor, schedule, steps_per_epoch,
            model: Some(model), optim, state, metrics, sample: None, last: StepStats::default(), knn: None,
            first_epoch, steps_here: 0, resumed: resume };
        if !resume && run.monitor.is_some() {
            run.knn = job.on_writer(|| run.initial_knn())?.flatten();
        }
        run.sample = if writes { plots::sample_batch(&run.train_set, config)? } else { None };
        if !backend::is_cpu(&run.device) && writes {
            eprintln!(
                "{}: the first steps compile and autotune kernels for this GPU, which can take minutes on a \
                 machine that has not run this config before (`barlow tune` does it ahead); kernel cache: {}",
                config.train.backend,
                backend::kernel_cache().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
            );
        }
        Ok(run)
    }

    fn model(&self) -> &Model {
        self.model.as_ref().expect("the model is given back by every step")
    }

    /// The kNN accuracy of the encoder before training (random, or `--init`'s), logged as epoch 0.
    fn initial_knn(&mut self) -> Result<Option<Accuracy>> {
        let Some(monitor) = &self.monitor else { return Ok(None) };
        let started = Instant::now();
        let acc = knn_monitor(self.model(), monitor, self.config)?;
        let seconds = started.elapsed().as_secs_f64();
        let start = if self.config.model.init.is_some() { "initial weights" } else { "random init" };
        eprintln!("epoch 0 ({start}): kNN top-1 {:.2}%  top-5 {:.2}%  ({seconds:.0}s)", acc.top1, acc.top5);
        log(&mut self.metrics, |m| m.epoch(&EpochRecord { epoch: 0, step: 0, loss: None, knn_top1: Some(acc.top1),
            knn_top5: Some(acc.top5), seconds }))?;
        Ok(Some(acc))
    }

    /// One epoch's steps, or as many as `max_steps` leaves: `None` when it stopped partway.
    fn epoch(&mut self, max_steps: usize) -> Result<Option<EpochTotals>> {
        let (config, epoch, batch) = (self.config, self.state.epoch, self.config.optim.batch_size);
        let bar = if self.writes { progress_bar(self.steps_per_epoch, epoch, config.optim.epochs) } else { ProgressBar::hidden() };
        let started = Instant::now();
        let mut loss_sum = 0.0;
        // Steps run but not yet read back, tagged with their number and learning-rate factor.
        let mut pending = PendingStats::default();
        let mut last_read = Instant::now();
        let (rank, workers) = (self.job.comm.rank(), self.job.comm.size());
        let loader = data::Loader::shard(&self.train_set, &config.data, batch, config.train.seed, epoch, rank, workers)?;
        for (i, views) in loader.enumerate() {
            let views = views?;
            let lr = self.schedule.factor(self.state.step);
            let crops = crops(&views, &self.device);
            let at = Progress { step: self.state.step, total: self.schedule.total_steps, steps_per_epoch: self.steps_per_epoch, lr };
            let model = self.model.take().expect("the model is given back by every step");
            let arithmetic = Arithmetic { precision: config.train.precision, scale_loss: config.model.scale_loss };
            let (next, loss) = self.job.step(model, &mut self.optim, crops, arithmetic, at);
            self.model = Some(next);
            self.state.step += 1;
            self.steps_here += 1;
            pending.push(&loss, (self.state.step, lr));
            self.device.flush()?;
            bar.inc(1);
            let end = i + 1 == self.steps_per_epoch || self.steps_here >= max_steps;
            // Read back every `log_every` steps, at the end of the epoch (before its checkpoint,
            // so that a non-finite loss is never saved) and after this invocation's first step
            // (which on a GPU includes compiling and tuning: worth seeing).
            if pending.len() >= config.train.log_every || end || self.steps_here == 1 {
                let seconds = last_read.elapsed().as_secs_f64();
                last_read = Instant::now();
                loss_sum += self.read_back(&mut pending, &bar, seconds, lr)?;
            }
            if end {
                break;
            }
        }
        bar.finish_and_clear();
        let partial = self.steps_here >= max_steps && !self.state.step.is_multiple_of(self.steps_per_epoch);
        Ok((!partial).then_some(EpochTotals { loss_sum, started }))
    }

    /// Reads back the steps of the last `seconds`, logs them and shows the latest on the
    /// progress bar; stops training at a non-finite loss. Gives the sum of their losses.
    fn read_back(&mut self, pending: &mut PendingStats<(usize, f64)>, bar: &ProgressBar, seconds: f64, lr: f64) -> Result<f64> {
        let (epoch, config) = (self.state.epoch, self.config);
        let stats = pending.read();
        let images_per_s = (stats.len() * config.optim.batch_size) as f64 / seconds;
        if self.steps_here == 1 && !backend::is_cpu(&self.device) && self.writes {
            bar.suspend(|| eprintln!("first step: {seconds:.1}s"));
        }
        let mut loss_sum = 0.0;
        for ((step, lr_factor), stats) in stats {
            if !stats.loss.is_finite() {
                bar.abandon();
                let kept = self.resumed || self.state.epoch > self.first_epoch;
                bail!(
                    "the loss became {} at epoch {epoch}, step {step} (lr factor {lr_factor:.4}); training stopped. {}",
                    stats.loss, diverged_advice(self.out, kept.then_some(self.state.epoch))
                );
            }
            self.last = stats.clone();
            loss_sum += stats.loss;
            log(&mut self.metrics, |m| m.step(&StepRecord { epoch, step, lr_factor, images_per_s, stats }))?;
        }
        let terms: Vec<String> = self.last.terms.0.iter().map(|(name, v)| format!("{name} {}", short(*v))).collect();
        let terms = if terms.is_empty() { String::new() } else { format!(" ({})", terms.join(" ")) };
        bar.set_message(format!("loss {}{terms} lr {:.4} {images_per_s:.0} img/s", short(self.last.loss), lr * config.optim.lr_weights));
        Ok(loss_sum)
    }

    /// The end of an epoch, rank 0's: the kNN monitor, the log, the checkpoint, the pictures.
    fn end_of_epoch(&mut self, totals: EpochTotals) -> Result<()> {
        self.state.epoch += 1;
        let job = self.job;
        let acc = job.on_writer(|| self.summarise(totals))?;
        self.knn = acc.flatten().or(self.knn);
        Ok(())
    }

    fn summarise(&mut self, totals: EpochTotals) -> Result<Option<Accuracy>> {
        let (config, epoch, every) = (self.config, self.state.epoch, self.config.train.knn_every);
        let acc = match &self.monitor {
            Some(m) if every > 0 && (epoch.is_multiple_of(every) || epoch == config.optim.epochs) => {
                Some(knn_monitor(self.model(), m, config)?)
            }
            _ => None,
        };
        let mean = totals.loss_sum / self.steps_per_epoch as f64;
        let seconds = totals.started.elapsed().as_secs_f64();
        log(&mut self.metrics, |m| m.epoch(&EpochRecord { epoch, step: self.state.step, loss: Some(mean),
            knn_top1: acc.map(|a| a.top1), knn_top5: acc.map(|a| a.top5), seconds }))?;
        let knn_text = acc.map(|a| format!("  kNN top-1 {:.2}% top-5 {:.2}%", a.top1, a.top5)).unwrap_or_default();
        let images_per_s = (self.steps_per_epoch * config.optim.batch_size) as f64 / seconds;
        eprintln!("epoch {epoch}/{}: loss {mean:.2}  {images_per_s:.0} img/s  {seconds:.0}s{knn_text}", config.optim.epochs);
        checkpoint::save(&super::checkpoint_path(self.out), &self.state, self.model(), &self.optim)?;
        super::previous::discard(self.out)?;
        // Pictures are for people: failing to draw them must not stop training.
        let drawn = plots::curves(self.out, config.model.method()).and_then(|_| match &self.sample {
            Some(b) => plots::correlation(self.out, self.model(), b, epoch).map(|_| ()),
            None => Ok(()),
        });
        if let Err(e) = drawn {
            eprintln!("warning: could not draw the run's pictures: {e:#}");
        }
        Ok(acc)
    }
}

/// The model, optimiser and position a run starts from: fresh (its config.toml written), or
/// `out`'s checkpoint, which must have been made with this model, data and batch size.
fn restore(job: &Job, config: &Config, out: &Path, resume: bool, device: &Device, schedule: &Schedule)
    -> Result<(Model, ModuleOptimizer, RunState)> {
    let state = RunState { epoch: 0, step: 0, config: config.to_toml() };
    let optim = config.optimizer(schedule);
    if !resume {
        let model = crate::store::weights::initial_model(config, device)?;
        if job.writes() {
            checkpoint::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
        }
        return Ok((model, optim, state));
    }
    let model = config.model().init(device);
    let ckpt_path = super::checkpoint_path(out);
    let ckpt = job.read_checkpoint(&ckpt_path)?;
    let saved = Config::parse(&ckpt.state.config, &[]).context("the checkpoint's config")?;
    // The optimiser's settings may change (say, a lower learning rate after a divergence); the
    // network and its data may not.
    if saved.model != config.model || saved.data != config.data || saved.optim.batch_size != config.optim.batch_size {
        bail!("{}: the checkpoint was made with another model, data or batch size; resume with the \
               run's own config (saved in {})", ckpt_path.display(), out.join("config.toml").display());
    }
    if saved.optim != config.optim && job.writes() {
        eprintln!("note: resuming with changed optimiser settings: {:?}", config.optim);
        checkpoint::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
    }
    let state = ckpt.state.clone();
    let (model, optim) = ckpt.apply(model, optim).with_context(|| format!("checkpoint {} is not usable", ckpt_path.display()))?;
    if job.writes() {
        eprintln!("resuming {} at epoch {} (step {})", out.display(), state.epoch, state.step);
    }
    Ok((model, optim, state))
}

/// A batch's views on `device`: the first two the global crops, the rest the local ones.
fn crops(batch: &Batch, device: &Device) -> Crops {
    let mut views = batch.views.iter().map(|v| ops::upload(&v.pixels[..], v.shape, device));
    let global = views.by_ref().take(2).collect();
    Crops { global, local: views.collect() }
}
