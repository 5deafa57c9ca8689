//! BYOL (Grill et al., NeurIPS 2020): an online network with a predictor regresses a slowly
//! moving target network's projection of the other view; no negatives. References:
//! deepmind-research/byol; solo-learn `byol.py`.

use super::batchwide::Batchwide;
use super::heads::{check_predictor, draw, head, resolve_predictor};
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use super::momentum::{Momentum, TAU};
use crate::config::range::{LAYER, Range};
use crate::loss::{Loss, cosine};
use crate::model::{Projector, ResNet, ResNetConfig};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The target's τ: from the paper's 0.996 (ImageNet) to 1 by a cosine over training.
pub const EMA: [f64; 2] = [0.996, 1.0];

/// The predictor's hidden width in the paper (4096; its output is the projector's 256).
pub const PREDICTOR_HIDDEN: usize = 4096;

/// BYOL's `[model]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The predictor's widths, the last being D again [default: the paper's 4096, D].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictor: Option<Vec<usize>>,
    /// τ of the target network at the first step and at the last (cosine between), in [0, 1].
    pub ema: [f64; 2],
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { predictor: None, ema: EMA }
    }
}

impl MethodSettings for Settings {
    fn resolve(&mut self, d: usize) {
        resolve_predictor(&mut self.predictor, PREDICTOR_HIDDEN, d);
    }

    fn check(&self, run: &Setup) -> Result<()> {
        check_predictor(&self.predictor, run)?;
        self.ema.iter().try_for_each(|tau| TAU.check("model.ema", *tau))
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![("model.predictor", LAYER), ("model.ema", TAU)]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test).
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[
    ("byol-cifar10", "model.predictor", &["[4096, {d}]", "[{d}]"], &["[0, {d}]", "[40000, {d}]"]),
];

/// The online network (encoder, projector, predictor) and the target network following it.
#[derive(Module, Debug)]
pub struct Byol {
    pub backbone: ResNet,
    pub projector: Projector,
    pub predictor: Projector,
    pub momentum: Momentum,
}

impl SelfSupervised for Byol {
    const NAME: &'static str = "byol";
    const TITLE: &'static str = "BYOL";
    const TRAITS: Traits = Traits {
        negatives: "none",
        momentum_encoder: true,
        predictor: true,
        loss: "2 − 2·cos(prediction, target)",
        batch_claim: "low from 256 to 4096, lower below (its Fig. 3a)",
    };
    const CROSSING: Crossing = Crossing::ShardMean;
    const PLOT: Plot = Plot { total: "loss (2 − 2·cos, both views)", log_scale: true, correlation_ideal: None };
    const MULTI_CROP: bool = false;
    type Settings = Settings;
    type Carry = ();

    fn init(s: &Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> Byol {
        let d = *projector.last().expect("a projector layer");
        let predictor = s.predictor.as_deref().expect("resolved settings");
        let heads = |f| (head(f, projector).with_out_bias(true).init(device), head(d, predictor).with_out_bias(true).init(device));
        let (backbone, (projector, predictor)) = draw(encoder, heads, device);
        let momentum = Momentum::copy_of(&backbone, &projector, s.ema);
        Byol { backbone, projector, predictor, momentum }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> Byol {
        let momentum = Momentum::copy_of(&backbone, &self.projector, self.momentum.tau);
        Byol { backbone, momentum, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, _: &Batchwide, _: Stage) -> (Loss, ()) {
        let (y1, y2) = crops.two();
        let (z1, z2) = (self.project(y1.clone()), self.project(y2.clone()));
        let (p1, p2) = (self.predictor.forward(z1), self.predictor.forward(z2));
        let loss = byol_loss(p1, p2, self.momentum.forward(y1), self.momentum.forward(y2));
        (Loss::single(loss), ())
    }

    fn after_step(self, _: (), at: Stage) -> Byol {
        let momentum = self.momentum.follow(&self.backbone, &self.projector, at.step, at.total);
        Byol { momentum, ..self }
    }
}

/// The symmetrised loss of the online predictions `p_a`, `p_b` and the target projections
/// `t_a`, `t_b` of the two views (`N×D`; the targets carry no gradient):
///
/// ```text
/// L(p, t) = ‖p̄ − t̄‖² = 2 − 2·cos(p, t),   averaged over the batch
/// L_total = L(p_a, t_b) + L(p_b, t_a)
/// ```
pub fn byol_loss(p_a: Tensor<2>, p_b: Tensor<2>, t_a: Tensor<2>, t_b: Tensor<2>) -> Tensor<1> {
    let l = |p, t: Tensor<2>| (-cosine(p, t.detach()).mean()).mul_scalar(2.0).add_scalar(2.0);
    l(p_a, t_b) + l(p_b, t_a)
}
