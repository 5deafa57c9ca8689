//! One optimisation step: both views forward, the loss, backward, LARS update.

use crate::loss::BarlowLoss;
use crate::model::BarlowTwins;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

/// The scalars of one step, read back from the device once.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    pub loss: f64,
    pub on_diag: f64,
    pub off_diag: f64,
}

impl StepStats {
    pub fn read(loss: &BarlowLoss) -> Self {
        let scalar = |t: &Tensor<1>| t.clone().into_scalar::<f32>() as f64;
        StepStats { loss: scalar(&loss.total), on_diag: scalar(&loss.on_diag), off_diag: scalar(&loss.off_diag) }
    }
}

/// Updates `model` on one batch of two views (`N×3×H×W` each, on the model's autodiff device);
/// `lr` is the schedule's factor for this step.
pub fn train_step(
    model: BarlowTwins,
    optim: &mut ModuleOptimizer,
    y1: Tensor<4>,
    y2: Tensor<4>,
    lr: f64,
) -> (BarlowTwins, BarlowLoss) {
    let loss = model.forward(y1, y2);
    let grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let model = optim.step(lr, model, grads);
    (model, loss)
}
