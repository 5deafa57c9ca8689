//! SimCLR (Chen et al., ICML 2020): each view must pick out its partner among all 2N − 1 other
//! views of the batch (NT-Xent). Reference: google-research/simclr; solo-learn `simclr.py`.

use super::batchwide::Batchwide;
use super::heads::{draw, head};
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use crate::config::range::{POSITIVE, Range};
use crate::loss::{Loss, logsumexp, normalize};
use crate::model::{Projector, ResNet, ResNetConfig};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The paper's temperature for ImageNet (solo-learn's CIFAR recipe uses 0.2).
pub const TEMPERATURE: f64 = 0.1;

/// SimCLR's `[model]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The softmax temperature τ, > 0.
    pub temperature: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { temperature: TEMPERATURE }
    }
}

impl MethodSettings for Settings {
    fn check(&self, _: &Setup) -> Result<()> {
        POSITIVE.check("model.temperature", self.temperature)
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![("model.temperature", POSITIVE)]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test): none but those it
/// shares with another method.
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[];

/// The encoder and its g(·): Linear → ReLU → Linear, with biases and no BatchNorm.
#[derive(Module, Debug)]
pub struct SimClr {
    pub backbone: ResNet,
    pub projector: Projector,
    #[module(skip)]
    pub temperature: f64,
}

impl SelfSupervised for SimClr {
    const NAME: &'static str = "simclr";
    const TITLE: &'static str = "SimCLR";
    const TRAITS: Traits = Traits {
        negatives: "the other 2N − 2 views of the batch",
        momentum_encoder: false,
        predictor: false,
        loss: "NT-Xent (InfoNCE over the batch)",
        batch_claim: "high: gains with batches up to 8192 (its Fig. 9)",
    };
    // Every process's projections gathered: the negatives are the global batch's.
    const CROSSING: Crossing = Crossing::Global;
    const PLOT: Plot = Plot { total: "loss (InfoNCE)", log_scale: true, correlation_ideal: None };
    const MULTI_CROP: bool = false;
    type Settings = Settings;
    type Carry = ();

    fn init(s: &Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> SimClr {
        let head = |d| head(d, projector).with_hidden_norm(false).with_out_bias(true).init(device);
        let (backbone, projector) = draw(encoder, head, device);
        SimClr { backbone, projector, temperature: s.temperature }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> SimClr {
        SimClr { backbone, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, batch: &Batchwide, _: Stage) -> (Loss, ()) {
        let (y1, y2) = crops.two();
        let z_a = batch.gather(batch.project(&self.backbone, &self.projector, y1));
        let z_b = batch.gather(batch.project(&self.backbone, &self.projector, y2));
        (Loss::single(nt_xent(z_a, z_b, self.temperature)), ())
    }

    fn after_step(self, _: (), _: Stage) -> SimClr {
        self
    }
}

/// NT-Xent over the 2N views, `z_a`, `z_b` (`N×D`) being the projections of the two views:
///
/// ```text
/// s_ij = ẑ_i·ẑ_j / τ          (ẑ = z/‖z‖, i, j over all 2N views)
/// ℓ_i  = −log( exp(s_i,p(i)) / Σ_{k≠i} exp(s_ik) ),   p(i) the other view of i's image
/// L    = 1/(2N) Σ_i ℓ_i
/// ```
///
/// The 2N×2N similarity matrix is the only batch-wide quantity: a distributed version gathers
/// the embeddings of every worker into it.
pub fn nt_xent(z_a: Tensor<2>, z_b: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = z_a.dims();
    let (z_a, z_b) = (normalize(z_a), normalize(z_b));
    let positive = z_a.clone().mul(z_b.clone()).sum_dim(1).div_scalar(temperature);
    let z = Tensor::cat(vec![z_a, z_b], 0);
    let s = z.clone().matmul(z.transpose()).div_scalar(temperature);
    // k = i is left out of the sum by pushing s_ii far below every other logit (exp → 0).
    let device = s.device();
    let self_mask = Tensor::<2>::eye(2 * n, &device).cast(s.dtype()).mul_scalar(1e9);
    let all = logsumexp(s - self_mask);
    (all - Tensor::cat(vec![positive.clone(), positive], 0)).mean()
}
