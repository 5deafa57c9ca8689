//! `barlow train`: the pretraining loop with progress, metrics, checkpoints and the kNN monitor.

use super::metrics::{EpochRecord, Metrics, StepRecord};
use super::plots;
use super::step::{PendingStats, Progress, StepStats};
use crate::checkpoint::{self, RunState};
use crate::config::Config;
use crate::data;
use crate::collective;
use crate::dist::Job;
use crate::eval::{Accuracy, knn_accuracy};
use crate::methods::Model;
use crate::{backend, features, ops};
use anyhow::{Context, Result, bail};
use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
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
    let writes = job.writes();
    let _lock = if writes { Some(super::RunLock::acquire(out)?) } else { None };
    let ckpt_path = super::checkpoint_path(out);
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

    let mut model = match resume {
        true => config.model().init(&device),
        false => crate::weights::initial_model(config, &device)?,
    };
    let mut optim = config.optimizer(&schedule);
    let mut state = RunState { epoch: 0, step: 0, config: config.to_toml() };
    if resume {
        let ckpt = job.read_checkpoint(&ckpt_path)?;
        let saved = Config::parse(&ckpt.state.config, &[]).context("the checkpoint's config")?;
        // The optimiser's settings may change (say, a lower learning rate after a divergence);
        // the network and its data may not.
        if saved.model != config.model || saved.data != config.data || saved.optim.batch_size != config.optim.batch_size {
            bail!("{}: the checkpoint was made with another model, data or batch size; resume with the \
                   run's own config (saved in {})", ckpt_path.display(), out.join("config.toml").display());
        }
        if saved.optim != config.optim && writes {
            eprintln!("note: resuming with changed optimiser settings: {:?}", config.optim);
            checkpoint::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
        }
        state = ckpt.state.clone();
        (model, optim) = ckpt.apply(model, optim).with_context(|| format!("checkpoint {} is not usable", ckpt_path.display()))?;
        if writes {
            eprintln!("resuming {} at epoch {} (step {})", out.display(), state.epoch, state.step);
        }
    } else if writes {
        checkpoint::write_atomically(&out.join("config.toml"), config.to_toml().as_bytes())?;
    }
    // Every worker starts from rank 0's weights (fresh or resumed).
    model = job.share_model(model)?;
    let metrics_path = out.join("metrics.jsonl");
    if resume && writes {
        // Steps logged after the checkpoint (by a killed run) are about to be redone.
        super::metrics::truncate_after(&metrics_path, state.step)?;
    }
    let mut metrics = match writes {
        true => Some(Metrics::open(&metrics_path, resume)?),
        false => None,
    };
    let mut knn = None;
    if !resume && let Some(m) = &monitor {
        knn = job.on_writer(|| {
            let started = Instant::now();
            let acc = knn_monitor(&model, m, config)?;
            let seconds = started.elapsed().as_secs_f64();
            let start = if config.model.init.is_some() { "initial weights" } else { "random init" };
            eprintln!("epoch 0 ({start}): kNN top-1 {:.2}%  top-5 {:.2}%  ({seconds:.0}s)", acc.top1, acc.top5);
            log(&mut metrics, |m| m.epoch(&EpochRecord { epoch: 0, step: 0, loss: None, knn_top1: Some(acc.top1),
                knn_top5: Some(acc.top5), seconds }))?;
            Ok(acc)
        })?;
    }

    let sample = if writes { plots::sample_batch(&train_set, config)? } else { None };
    if !backend::is_cpu(&device) && writes {
        eprintln!(
            "{}: the first steps compile and autotune kernels for this GPU, which can take minutes on a \
             machine that has not run this config before (`barlow tune` does it ahead); kernel cache: {}",
            config.train.backend,
            backend::kernel_cache().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
        );
    }
    let mut last = StepStats::default();
    let max_steps = config.train.max_steps.unwrap_or(usize::MAX);
    let first_epoch = state.epoch;
    let mut steps_here = 0;
    while state.epoch < config.optim.epochs && steps_here < max_steps {
        let epoch = state.epoch;
        let bar = if writes { progress_bar(steps_per_epoch, epoch, config.optim.epochs) } else { ProgressBar::hidden() };
        let started = Instant::now();
        let mut loss_sum = 0.0;
        // Steps run but not yet read back, tagged with their number and learning-rate factor.
        let mut pending = PendingStats::default();
        let mut last_read = Instant::now();
        let (rank, workers) = (job.comm.rank(), job.comm.size());
        let loader = data::Loader::shard(&train_set, &config.data, batch, config.train.seed, epoch, rank, workers)?;
        for (i, views) in loader.enumerate() {
            let views = views?;
            let lr = schedule.factor(state.step);
            let (y1, y2) = (ops::upload(&views.view_a[..], views.shape, &device), ops::upload(&views.view_b[..], views.shape, &device));
            let progress = Progress { step: state.step, total: schedule.total_steps };
            let (next, loss) = job.step(model, &mut optim, y1, y2, lr, config.train.precision, progress);
            model = next;
            state.step += 1;
            steps_here += 1;
            pending.push(&loss, (state.step, lr));
            device.flush()?;
            bar.inc(1);
            let end = i + 1 == steps_per_epoch || steps_here >= max_steps;
            // Read back every `log_every` steps, at the end of the epoch (before its checkpoint,
            // so that a non-finite loss is never saved) and after this invocation's first step
            // (which on a GPU includes compiling and tuning: worth seeing).
            if pending.len() >= config.train.log_every || end || steps_here == 1 {
                let stats = pending.read();
                let seconds = last_read.elapsed().as_secs_f64();
                last_read = Instant::now();
                let images_per_s = (stats.len() * batch) as f64 / seconds;
                if steps_here == 1 && !backend::is_cpu(&device) && writes {
                    bar.suspend(|| eprintln!("first step: {seconds:.1}s"));
                }
                for ((step, lr_factor), stats) in stats {
                    if !stats.loss.is_finite() {
                        bar.abandon();
                        let kept = resume || state.epoch > first_epoch;
                        bail!(
                            "the loss became {} at epoch {epoch}, step {step} (lr factor {lr_factor:.4}); training \
                             stopped. {}",
                            stats.loss, diverged_advice(out, kept.then_some(state.epoch))
                        );
                    }
                    last = stats.clone();
                    loss_sum += stats.loss;
                    log(&mut metrics, |m| m.step(&StepRecord { epoch, step, lr_factor, images_per_s, stats }))?;
                }
                let terms: Vec<String> = last.terms.0.iter().map(|(name, v)| format!("{name} {}", short(*v))).collect();
                let terms = if terms.is_empty() { String::new() } else { format!(" ({})", terms.join(" ")) };
                bar.set_message(format!(
                    "loss {}{terms} lr {:.4} {images_per_s:.0} img/s",
                    short(last.loss), lr * config.optim.lr_weights
                ));
            }
            if end {
                break;
            }
        }
        bar.finish_and_clear();
        if steps_here >= max_steps && !state.step.is_multiple_of(steps_per_epoch) {
            break; // a partial epoch is neither summarised nor checkpointed
        }
        state.epoch += 1;
        // The end of an epoch is rank 0's: the kNN monitor, the log, the checkpoint, pictures.
        let acc = job.on_writer(|| {
            let every = config.train.knn_every;
            let acc = match &monitor {
                Some(m) if every > 0 && (state.epoch.is_multiple_of(every) || state.epoch == config.optim.epochs) => {
                    Some(knn_monitor(&model, m, config)?)
                }
                _ => None,
            };
            let mean = loss_sum / steps_per_epoch as f64;
            let seconds = started.elapsed().as_secs_f64();
            log(&mut metrics, |m| m.epoch(&EpochRecord { epoch: state.epoch, step: state.step, loss: Some(mean),
                knn_top1: acc.map(|a| a.top1), knn_top5: acc.map(|a| a.top5), seconds }))?;
            let knn_text = acc.map(|a| format!("  kNN top-1 {:.2}% top-5 {:.2}%", a.top1, a.top5)).unwrap_or_default();
            eprintln!(
                "epoch {}/{}: loss {mean:.2}  {:.0} img/s  {seconds:.0}s{knn_text}",
                state.epoch, config.optim.epochs, (steps_per_epoch * batch) as f64 / seconds
            );
            checkpoint::save(&ckpt_path, &state, &model, &optim)?;
            super::previous::discard(out)?;
            // Pictures are for people: failing to draw them must not stop training.
            let drawn = plots::curves(out, config.model.method).and_then(|_| match &sample {
                Some(b) => plots::correlation(out, &model, b, state.epoch).map(|_| ()),
                None => Ok(()),
            });
            if let Err(e) = drawn {
                eprintln!("warning: could not draw the run's pictures: {e:#}");
            }
            Ok(acc)
        })?;
        knn = acc.flatten().or(knn);
    }
    if let Some(costs) = job.costs().filter(|_| writes) {
        eprintln!("{costs}");
    }
    Ok(Summary { epochs: state.epoch, steps: state.step, last_loss: last.loss, knn, saved: state.epoch > first_epoch })
}

/// What to do after a divergence: resume from this run's checkpoint of `epoch` with a lower
/// learning rate, or, when this run wrote none, start again with one.
fn diverged_advice(out: &Path, epoch: Option<usize>) -> String {
    let (dir, path) = (out.display(), super::checkpoint_path(out));
    match epoch {
        Some(epoch) => format!(
            "The last good checkpoint is {} (epoch {epoch}): continue from it with a lower learning rate, \
             `barlow train --resume --out {dir} --set optim.lr_weights=...`",
            path.display()
        ),
        None => format!(
            "This run wrote no checkpoint (it diverged within its first epoch): start it again with a lower \
             learning rate, `barlow train --overwrite --out {dir} --set optim.lr_weights=...`, with the same --config"
        ),
    }
}

/// Writes a record when this worker keeps the log (rank 0).
fn log(metrics: &mut Option<Metrics>, write: impl FnOnce(&mut Metrics) -> Result<()>) -> Result<()> {
    metrics.as_mut().map_or(Ok(()), write)
}

/// kNN accuracy of the encoder's features (eval-mode BatchNorm) on the monitor's splits.
pub fn knn_monitor(model: &Model, monitor: &data::Monitor, config: &Config) -> Result<Accuracy> {
    let encoder = model.backbone.valid();
    let device = encoder.devices().into_iter().next().expect("a device");
    let views = data::Views::new(&config.data.views, config.data.size, monitor.train.normalize())?;
    let limit = |set: &data::Dataset| config.train.knn_limit.map(|n| set.spread(n)).unwrap_or_else(|| set.clone());
    let (train_set, test_set) = (limit(&monitor.train), limit(&monitor.test));
    let train = features::encode(&encoder, &train_set, &views, &device)?;
    let test = features::encode(&encoder, &test_set, &views, &device)?;
    Ok(knn_accuracy(
        train,
        train_set.labels().context("the kNN monitor needs labels")?,
        test,
        test_set.labels().context("the kNN monitor needs labels")?,
        monitor.train.num_classes(),
        config.train.knn_k,
        config.train.knn_t,
    ))
}

/// A loss value in a few characters, whatever its size.
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.4}"),
    }
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "epoch {}/{epochs} {{bar:30}} {{pos}}/{{len}} {{msg}} ETA {{eta}}",
            epoch + 1
        ))
        .expect("a valid template"),
    );
    bar
}

/// Refuses a step of `local` images a view that cannot fit in this machine's memory, before the
/// allocation that would abort the process: its stems' outputs alone, and the loader's buffers.
fn step_fits(config: &Config, local: usize) -> Result<()> {
    let size = config.data.size;
    let stems = 2 * config.model().encoder.stem_bytes(local, size);
    let loader = data::loader_bytes(local, size);
    let what = format!("a training step of 2 × {local} images at data.size = {size} with model.width = {}", config.model.width);
    crate::memory::ensure_fits(stems + loader, &what, "lower optim.batch_size, data.size or model.width")
}
