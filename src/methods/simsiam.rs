//! SimSiam (Chen & He, CVPR 2021): one network predicts its own projection of the other view;
//! the stop-gradient alone prevents collapse. References: facebookresearch/simsiam; solo-learn
//! `simsiam.py`.

use super::batchwide::Batchwide;
use super::heads::{check_predictor, draw, head, resolve_predictor};
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use crate::config::range::{LAYER, Range};
use crate::loss::{Loss, cosine};
use crate::model::{Projector, ResNet, ResNetConfig};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The paper's predictor: a 512-wide bottleneck (back to the projector's width).
pub const PREDICTOR_HIDDEN: usize = 512;

/// SimSiam's `[model]` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The predictor's widths, the last being D again [default: the paper's 512, D].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictor: Option<Vec<usize>>,
}

impl MethodSettings for Settings {
    fn resolve(&mut self, d: usize) {
        resolve_predictor(&mut self.predictor, PREDICTOR_HIDDEN, d);
    }

    fn check(&self, run: &Setup) -> Result<()> {
        check_predictor(&self.predictor, run)
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![("model.predictor", LAYER)]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test): none but those it
/// shares with another method.
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[];

/// The encoder, its projector (every layer batch-normalised, the output without affine
/// parameters) and the predictor.
#[derive(Module, Debug)]
pub struct SimSiam {
    pub backbone: ResNet,
    pub projector: Projector,
    pub predictor: Projector,
}

impl SelfSupervised for SimSiam {
    const NAME: &'static str = "simsiam";
    const TITLE: &'static str = "SimSiam";
    const TRAITS: Traits = Traits {
        negatives: "none",
        momentum_encoder: false,
        predictor: true,
        loss: "−cos(prediction, stop-grad projection)",
        batch_claim: "low: 64 to 2048 within 2 points (its Table 2)",
    };
    const CROSSING: Crossing = Crossing::ShardMean;
    // The negative cosine is below zero: no log axis for it.
    const PLOT: Plot = Plot { total: "loss (−cos)", log_scale: false, correlation_ideal: None };
    const MULTI_CROP: bool = false;
    type Settings = Settings;
    type Carry = ();

    fn init(s: &Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> SimSiam {
        let d = *projector.last().expect("a projector layer");
        let predictor = s.predictor.as_deref().expect("resolved settings");
        let heads = |f| (head(f, projector).with_out_norm(true).init(device), head(d, predictor).with_out_bias(true).init(device));
        let (backbone, (projector, predictor)) = draw(encoder, heads, device);
        SimSiam { backbone, projector, predictor }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> SimSiam {
        SimSiam { backbone, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, _: &Batchwide, _: Stage) -> (Loss, ()) {
        let (y1, y2) = crops.two();
        let (z1, z2) = (self.project(y1), self.project(y2));
        let (p1, p2) = (self.predictor.forward(z1.clone()), self.predictor.forward(z2.clone()));
        (Loss::single(simsiam_loss(p1, p2, z1, z2)), ())
    }

    fn after_step(self, _: (), _: Stage) -> SimSiam {
        self
    }
}

/// The symmetrised negative cosine of the predictions `p_a`, `p_b` and the projections `z_a`,
/// `z_b` of the two views (`N×D`), with the stop-gradient on the projections:
///
/// ```text
/// D(p, z) = −cos(p, stopgrad(z)),   averaged over the batch
/// L = D(p_a, z_b)/2 + D(p_b, z_a)/2
/// ```
pub fn simsiam_loss(p_a: Tensor<2>, p_b: Tensor<2>, z_a: Tensor<2>, z_b: Tensor<2>) -> Tensor<1> {
    let d = |p, z: Tensor<2>| -cosine(p, z.detach()).mean();
    (d(p_a, z_b) + d(p_b, z_a)).div_scalar(2.0)
}
