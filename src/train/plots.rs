//! The run's pictures, redrawn after every epoch: training curves and the cross-correlation C of
//! the projector outputs (Barlow Twins' objective; for the other methods, a look at how
//! redundant their embedding dimensions are).

use super::metrics::{self, Record};
use crate::config::Config;
use crate::data::{self, Batch, Dataset};
use crate::loss::{cross_correlation, standardize};
use crate::methods::{Method, Model};
use crate::plot;
use anyhow::Result;
use burn::module::Module;
use std::path::{Path, PathBuf};

/// The C heatmap shows this many dimensions (its top-left block).
const SHOWN: usize = 64;

/// `curves.png` from the run's `metrics.jsonl`, labelled for `method`.
pub fn curves(run: &Path, method: Method) -> Result<PathBuf> {
    let records: Vec<plot::Record> = metrics::read(&run.join("metrics.jsonl"))?
        .into_iter()
        .map(|r| match r {
            Record::Step(s) => plot::Record {
                step: s.step,
                epoch: s.epoch,
                loss: Some(s.stats.loss),
                terms: s.stats.terms.0.into_iter().map(|(name, v)| (term_label(&name), Some(v))).collect(),
                knn_top1: None,
            },
            Record::Epoch(e) => plot::Record { step: e.step, epoch: e.epoch, knn_top1: e.knn_top1, ..Default::default() },
        })
        .collect();
    let out = run.join("curves.png");
    plot::training_curves(&records, &loss_labels(method), &out)?;
    Ok(out)
}

/// The loss panel's title and the total's legend for `method`.
pub fn loss_labels(method: Method) -> plot::LossLabels {
    let p = method.plot();
    plot::LossLabels { title: format!("{} loss", method.title()), total: p.total.to_string(), log_scale: p.log_scale }
}

/// How a loss term is named in the legend.
fn term_label(name: &str) -> String {
    match name {
        "on_diag" => "on-diagonal (invariance)".into(),
        "off_diag" => "off-diagonal (redundancy)".into(),
        other => other.into(),
    }
}

/// The `D×D` cross-correlation of `batch`'s two views through `model` (BatchNorm in eval mode,
/// so drawing it leaves the training state untouched), row-major.
pub fn correlation_matrix(model: &Model, batch: &Batch) -> (Vec<f32>, usize) {
    let model = model.valid();
    let device = model.devices().into_iter().next().expect("a device");
    let view = |v: &data::loader::View| model.project(crate::ops::upload(&v.pixels[..], v.shape, &device));
    let (z_a, z_b) = (view(&batch.views[0]), view(&batch.views[1]));
    let [n, d] = z_a.dims();
    let c = cross_correlation(standardize(z_a), standardize(z_b), n);
    (c.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values"), d)
}

/// `correlation.png`: the top-left block of C after `epoch` epochs.
pub fn correlation(run: &Path, model: &Model, batch: &Batch, epoch: usize) -> Result<PathBuf> {
    let (c, d) = correlation_matrix(model, batch);
    let k = SHOWN.min(d);
    let out = run.join("correlation.png");
    let m = model.method();
    let title = match m.plot().correlation_ideal {
        Some(ideal) => format!("cross-correlation C after epoch {epoch} ({k}×{k} of {d}; ideal: {ideal})"),
        None => format!("{} projections' cross-correlation after epoch {epoch} ({k}×{k} of {d})", m.title()),
    };
    plot::correlation_heatmap(&c, d, k, &title, &out)?;
    Ok(out)
}

/// The fixed batch of two views the heatmap is drawn from, the same in every epoch.
pub fn sample_batch(set: &Dataset, config: &Config) -> Result<Option<Batch>> {
    let batch = config.optim.batch_size.min(256);
    data::Loader::new(set, &config.data, batch, config.train.seed ^ 0xC0, 0)?.next().transpose()
}
