//! The run's pictures, redrawn after every epoch: training curves and the cross-correlation C.

use super::metrics::{self, Record};
use crate::config::Config;
use crate::data::{self, Batch, Dataset};
use crate::loss::{cross_correlation, standardize};
use crate::model::BarlowTwins;
use crate::plot;
use anyhow::Result;
use burn::module::Module;
use std::path::{Path, PathBuf};

/// The C heatmap shows this many dimensions (its top-left block).
const SHOWN: usize = 64;

/// `curves.png` from the run's `metrics.jsonl`.
pub fn curves(run: &Path) -> Result<PathBuf> {
    let records: Vec<plot::Record> = metrics::read(&run.join("metrics.jsonl"))?
        .into_iter()
        .map(|r| match r {
            Record::Step(s) => plot::Record {
                step: s.step,
                epoch: s.epoch,
                loss: Some(s.stats.loss),
                on_diag: Some(s.stats.on_diag),
                off_diag: Some(s.stats.off_diag),
                knn_top1: None,
            },
            Record::Epoch(e) => plot::Record { step: e.step, epoch: e.epoch, knn_top1: e.knn_top1, ..Default::default() },
        })
        .collect();
    let out = run.join("curves.png");
    plot::training_curves(&records, &out)?;
    Ok(out)
}

/// The `D×D` cross-correlation of `batch`'s two views through `model` (BatchNorm in eval mode,
/// so drawing it leaves the training state untouched), row-major.
pub fn correlation_matrix(model: &BarlowTwins, batch: &Batch) -> (Vec<f32>, usize) {
    let model = model.valid();
    let device = model.devices().into_iter().next().expect("a device");
    let z_a = model.project(super::run::to_tensor(&batch.view_a, batch.shape, &device));
    let z_b = model.project(super::run::to_tensor(&batch.view_b, batch.shape, &device));
    let [n, d] = z_a.dims();
    let c = cross_correlation(standardize(z_a), standardize(z_b), n);
    (c.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values"), d)
}

/// `correlation.png`: the top-left block of C after `epoch` epochs.
pub fn correlation(run: &Path, model: &BarlowTwins, batch: &Batch, epoch: usize) -> Result<PathBuf> {
    let (c, d) = correlation_matrix(model, batch);
    let k = SHOWN.min(d);
    let out = run.join("correlation.png");
    let title = format!("cross-correlation C after epoch {epoch} ({k}×{k} of {d}; ideal: identity)");
    plot::correlation_heatmap(&c, d, k, &title, &out)?;
    Ok(out)
}

/// The fixed batch of two views the heatmap is drawn from, the same in every epoch.
pub fn sample_batch(set: &Dataset, config: &Config) -> Result<Option<Batch>> {
    let batch = config.optim.batch_size.min(256);
    data::Loader::new(set, &config.data, batch, config.train.seed ^ 0xC0, 0)?.next().transpose()
}
