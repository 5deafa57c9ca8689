//! VICReg (Bardes, Ponce & LeCun, ICLR 2022): invariance between the views, a hinge keeping each
//! dimension's standard deviation up, and decorrelated dimensions — Barlow Twins' closest
//! sibling, with the three terms apart. Reference: facebookresearch/vicreg `main_vicreg.py`.

use super::batchwide::Batchwide;
use super::heads::{draw, head};
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use crate::config::range::{NON_NEGATIVE, Range};
use crate::loss::{Loss, diagonal};
use crate::model::{Projector, ResNet, ResNetConfig};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// ε under the square root of the variance hinge.
pub const EPS: f64 = 1e-4;

/// VICReg's `[model]` settings: the coefficients λ (invariance), μ (variance) and ν
/// (covariance), each ≥ 0; the paper's are 25, 25, 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { invariance: 25.0, variance: 25.0, covariance: 1.0 }
    }
}

impl MethodSettings for Weights {
    fn check(&self, _: &Setup) -> Result<()> {
        NON_NEGATIVE.check("model.invariance", self.invariance)?;
        NON_NEGATIVE.check("model.variance", self.variance)?;
        NON_NEGATIVE.check("model.covariance", self.covariance)
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![("model.invariance", NON_NEGATIVE), ("model.variance", NON_NEGATIVE), ("model.covariance", NON_NEGATIVE)]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test).
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[
    ("vicreg-cifar10", "model.invariance", &["0", "25"], &["-1", "nan"]),
    ("vicreg-cifar10", "model.variance", &["0", "25"], &["-25"]),
    ("vicreg-cifar10", "model.covariance", &["0", "1"], &["-1", "inf"]),
];

/// The encoder and its expander (Barlow Twins' projector).
#[derive(Module, Debug)]
pub struct VicReg {
    pub backbone: ResNet,
    pub projector: Projector,
    #[module(skip)]
    pub weights: Weights,
}

impl SelfSupervised for VicReg {
    const NAME: &'static str = "vicreg";
    const TITLE: &'static str = "VICReg";
    const TRAITS: Traits = Traits {
        negatives: "none",
        momentum_encoder: false,
        predictor: false,
        loss: "invariance + variance hinge + covariance",
        batch_claim: "low: no large batch needed (as Barlow Twins)",
    };
    // Every process's embeddings gathered, as `main_vicreg.py`'s `FullGatherLayer`.
    const CROSSING: Crossing = Crossing::Global;
    const PLOT: Plot = Plot { total: "loss = λ·inv + μ·var + ν·cov", log_scale: true, correlation_ideal: None };
    const MULTI_CROP: bool = false;
    type Settings = Weights;
    type Carry = ();

    fn init(weights: &Weights, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> VicReg {
        let (backbone, projector) = draw(encoder, |d| head(d, projector).init(device), device);
        VicReg { backbone, projector, weights: *weights }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> VicReg {
        VicReg { backbone, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, batch: &Batchwide, _: Stage) -> (Loss, ()) {
        let (y1, y2) = crops.two();
        let z_a = batch.gather(batch.project(&self.backbone, &self.projector, y1));
        let z_b = batch.gather(batch.project(&self.backbone, &self.projector, y2));
        (vicreg_loss(z_a, z_b, self.weights), ())
    }

    fn after_step(self, _: (), _: Stage) -> VicReg {
        self
    }
}

/// The expander of the paper: 8192-8192-8192.
pub const EXPANDER: [usize; 3] = [8192, 8192, 8192];

/// The VICReg loss of two expander outputs `z_a`, `z_b` (`N×D`):
///
/// ```text
/// s(Z, Z')  = 1/(N·D) Σ ‖z_i − z'_i‖²                         (invariance: F.mse_loss)
/// v(Z)      = 1/D Σ_j max(0, 1 − √(Var(z^j) + ε))              (Var unbiased)
/// c(Z)      = 1/D Σ_{i≠j} C(Z)_ij²,  C(Z) = (Z−Z̄)ᵀ(Z−Z̄)/(N−1)
/// L = λ·s + μ·(v(Z) + v(Z'))/2 + ν·(c(Z) + c(Z'))
/// ```
///
/// Logged terms are s, (v(Z)+v(Z'))/2 and c(Z)+c(Z'), before their coefficients.
pub fn vicreg_loss(z_a: Tensor<2>, z_b: Tensor<2>, w: Weights) -> Loss {
    let [n, d] = z_a.dims();
    let invariance = (z_a.clone() - z_b.clone()).square().mean();
    let centre = |z: Tensor<2>| z.clone() - z.mean_dim(0);
    let (z_a, z_b) = (centre(z_a), centre(z_b));
    let variance_of = |z: &Tensor<2>| {
        let var = z.clone().square().sum_dim(0).div_scalar((n - 1) as f64);
        relu(var.add_scalar(EPS).sqrt().neg().add_scalar(1.0)).mean()
    };
    let variance = (variance_of(&z_a) + variance_of(&z_b)).div_scalar(2.0);
    let covariance_of = |z: Tensor<2>| {
        let c = z.clone().transpose().matmul(z).div_scalar((n - 1) as f64);
        // Σ_{i≠j} C_ij² = Σ C² − Σ diag(C)², without a masked copy of C.
        (c.clone().square().sum() - diagonal(c).square().sum()).div_scalar(d as f64)
    };
    let covariance = covariance_of(z_a) + covariance_of(z_b);
    let total = invariance.clone().mul_scalar(w.invariance)
        + variance.clone().mul_scalar(w.variance)
        + covariance.clone().mul_scalar(w.covariance);
    Loss { total, terms: vec![("invariance", invariance), ("variance", variance), ("covariance", covariance)] }
}
