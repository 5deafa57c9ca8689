//! One optimisation step: both views forward, the loss, backward, LARS update.

use crate::loss::BarlowLoss;
use crate::model::BarlowTwins;
use crate::ops::precision::{Precision, autocast};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

/// The scalars of one step, read back from the device.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    pub loss: f64,
    pub on_diag: f64,
    pub off_diag: f64,
}

impl StepStats {
    /// Reads one step's scalars now, waiting for the device to compute them.
    pub fn read(loss: &BarlowLoss) -> Self {
        let mut pending = PendingStats::default();
        pending.push(loss, ());
        pending.read()[0].1
    }
}

/// Step scalars left on the device until they are wanted, then read back together in one
/// transfer, each with what the caller tagged its step with: reading a value waits for the
/// device to finish everything queued before it, so reading every step would keep the host from
/// queueing the next step while the device works.
pub struct PendingStats<T> {
    steps: Vec<(T, Tensor<1>)>,
}

impl<T> Default for PendingStats<T> {
    fn default() -> Self {
        PendingStats { steps: vec![] }
    }
}

impl<T> PendingStats<T> {
    pub fn push(&mut self, loss: &BarlowLoss, tag: T) {
        let terms = [&loss.total, &loss.on_diag, &loss.off_diag].map(|t| t.clone().detach());
        self.steps.push((tag, Tensor::cat(terms.to_vec(), 0)));
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps pushed since the last read, in order, with their scalars.
    pub fn read(&mut self) -> Vec<(T, StepStats)> {
        if self.steps.is_empty() {
            return vec![];
        }
        let (tags, scalars): (Vec<T>, Vec<Tensor<1>>) = std::mem::take(&mut self.steps).into_iter().unzip();
        let values = Tensor::cat(scalars, 0).into_data().convert::<f64>().try_into_vec::<f64>().expect("f64 step scalars");
        let stats = values.chunks_exact(3).map(|v| StepStats { loss: v[0], on_diag: v[1], off_diag: v[2] });
        tags.into_iter().zip(stats).collect()
    }
}

/// Updates `model` on one batch of two views (`N×3×H×W` each, on the model's autodiff device);
/// `lr` is the schedule's factor for this step; convolutions and matrix products run in
/// `precision` (the weights and the optimiser stay f32).
pub fn train_step(
    model: BarlowTwins,
    optim: &mut ModuleOptimizer,
    y1: Tensor<4>,
    y2: Tensor<4>,
    lr: f64,
    precision: Precision,
) -> (BarlowTwins, BarlowLoss) {
    let loss = autocast(precision, || model.forward(y1, y2));
    let grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let model = optim.step(lr, model, grads);
    (model, loss)
}
