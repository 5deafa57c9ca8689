//! Barlow Twins (Zbontar et al., ICML 2021): make the cross-correlation of two views' embeddings
//! the identity. Reference: facebookresearch/barlowtwins `main.py`.

use super::batchwide::Batchwide;
use super::heads::{draw, head};
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use crate::config::range::{NON_NEGATIVE, Range};
use crate::loss::{Loss, cross_correlation, diagonal, standardize};
use crate::model::{Projector, ResNet, ResNetConfig};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// λ from the paper: the weight of the redundancy-reduction (off-diagonal) term.
pub const LAMBDA: f64 = 0.0051;

/// Barlow Twins' `[model]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The weight λ of the off-diagonal term, ≥ 0.
    pub lambda: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { lambda: LAMBDA }
    }
}

impl MethodSettings for Settings {
    fn check(&self, _: &Setup) -> Result<()> {
        NON_NEGATIVE.check("model.lambda", self.lambda)
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![("model.lambda", NON_NEGATIVE)]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test).
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[
    ("quick", "model.lambda", &["0.0", "0.0051"], &["-0.1", "nan", "inf"]),
];

/// The encoder and its projector (Linear → BN → ReLU, ×2, → Linear, no biases before a BN).
#[derive(Module, Debug)]
pub struct BarlowTwins {
    pub backbone: ResNet,
    pub projector: Projector,
    #[module(skip)]
    pub lambda: f64,
}

impl SelfSupervised for BarlowTwins {
    const NAME: &'static str = "barlow";
    const TITLE: &'static str = "Barlow Twins";
    const TRAITS: Traits = Traits {
        negatives: "none",
        momentum_encoder: false,
        predictor: false,
        loss: "cross-correlation of the views → identity",
        batch_claim: "low: robust to small batches (its batch-size ablation, vs SimCLR and BYOL)",
    };
    // The official code sums C over the processes (`torch.distributed.all_reduce(c)`).
    const CROSSING: Crossing = Crossing::Global;
    const PLOT: Plot = Plot { total: "loss = on + λ·off", log_scale: true, correlation_ideal: Some("identity") };
    const MULTI_CROP: bool = false;
    type Settings = Settings;
    type Carry = ();

    fn init(s: &Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> BarlowTwins {
        let (backbone, projector) = draw(encoder, |d| head(d, projector).init(device), device);
        BarlowTwins { backbone, projector, lambda: s.lambda }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> BarlowTwins {
        BarlowTwins { backbone, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, batch: &Batchwide, _: Stage) -> (Loss, ()) {
        (self.correlation(crops, batch).0.into(), ())
    }

    fn after_step(self, _: (), _: Stage) -> BarlowTwins {
        self
    }
}

impl BarlowTwins {
    /// The loss and C of the global batch from this process's two views.
    pub fn correlation(&self, crops: &Crops, batch: &Batchwide) -> (BarlowLoss, Tensor<2>) {
        let (y1, y2) = crops.two();
        let z_a = batch.project(&self.backbone, &self.projector, y1);
        let z_b = batch.project(&self.backbone, &self.projector, y2);
        let c = batch.cross_correlation(z_a, z_b);
        (barlow_loss_from_c(c.clone(), self.lambda), c)
    }
}

/// The loss and its two terms, kept apart so that they can be logged.
#[derive(Clone, Debug)]
pub struct BarlowLoss {
    /// `on_diag + λ · off_diag`.
    pub total: Tensor<1>,
    /// Invariance term: Σ_i (1 − C_ii)².
    pub on_diag: Tensor<1>,
    /// Redundancy-reduction term, before λ: Σ_{i≠j} C_ij².
    pub off_diag: Tensor<1>,
}

impl From<BarlowLoss> for Loss {
    fn from(l: BarlowLoss) -> Loss {
        Loss { total: l.total, terms: vec![("on_diag", l.on_diag), ("off_diag", l.off_diag)] }
    }
}

/// The Barlow Twins loss of a cross-correlation matrix `c` (`D×D`):
///
/// ```text
/// L = Σ_i (1 − C_ii)²  +  λ Σ_{i≠j} C_ij²
/// ```
///
/// The off-diagonal sum is Σ C² − Σ diag(C)², so no masked copy of C is ever built.
pub fn barlow_loss_from_c(c: Tensor<2>, lambda: f64) -> BarlowLoss {
    let [d, d2] = c.dims();
    assert_eq!(d, d2, "cross-correlation must be square, got {d}×{d2}");
    let diag = diagonal(c.clone());
    let on_diag = (diag.clone() - 1.0).square().sum();
    let off_diag = c.square().sum() - diag.square().sum();
    let total = on_diag.clone() + off_diag.clone().mul_scalar(lambda);
    BarlowLoss { total, on_diag, off_diag }
}

/// The Barlow Twins loss of two projector outputs `z_a`, `z_b` (`N×D`), on one worker.
pub fn barlow_loss(z_a: Tensor<2>, z_b: Tensor<2>, lambda: f64) -> BarlowLoss {
    let [n, _] = z_a.dims();
    let c = cross_correlation(standardize(z_a), standardize(z_b), n);
    barlow_loss_from_c(c, lambda)
}
