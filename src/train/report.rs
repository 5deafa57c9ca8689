//! What a run tells its user and its log: the progress bar, the kNN monitor, the log records,
//! the advice after a divergence, and the memory a step needs.

use super::metrics::Metrics;
use crate::config::Config;
use crate::data;
use crate::eval::{Accuracy, knn_accuracy};
use crate::eval::features;
use crate::methods::Model;
use anyhow::{Context, Result};
use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// What to do after a divergence: resume from this run's checkpoint of `epoch` with a lower
/// learning rate, or, when this run wrote none, start again with one.
pub(super) fn diverged_advice(out: &Path, epoch: Option<usize>) -> String {
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
pub(super) fn log(metrics: &mut Option<Metrics>, write: impl FnOnce(&mut Metrics) -> Result<()>) -> Result<()> {
    metrics.as_mut().map_or(Ok(()), write)
}

/// kNN accuracy of the encoder's features (eval-mode BatchNorm) on the monitor's splits.
pub fn knn_monitor(model: &Model, monitor: &data::Monitor, config: &Config) -> Result<Accuracy> {
    let encoder = model.backbone().valid();
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
pub(super) fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.4}"),
    }
}

pub(super) fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
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
pub(super) fn step_fits(config: &Config, local: usize) -> Result<()> {
    let (d, encoder) = (&config.data, config.model().encoder);
    let size = d.size;
    let stems = 2 * encoder.stem_bytes(local, size) + d.local_crops as u128 * encoder.stem_bytes(local, d.local_size);
    let loader = data::loader_bytes(local, &data::Views::for_training(d, data::Normalize::gray(0.0, 1.0))?);
    let what = format!("a training step of 2 × {local} images at data.size = {size} with model.width = {}", config.model.width);
    crate::memory::ensure_fits(stems + loader, &what, "lower optim.batch_size, data.size or model.width")
}
