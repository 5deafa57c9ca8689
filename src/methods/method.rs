//! What a method is: the trait each method's file implements, and what it declares about itself.

use super::batchwide::Batchwide;
use crate::config::range::Range;
use crate::loss::Loss;
use crate::model::{ResNet, ResNetConfig};
use anyhow::Result;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A self-supervised method: the encoder (`backbone`, a torchvision-named ResNet), its heads,
/// its loss over a batch's views and its own state (momentum network, queue, centre), as one
/// module whose tensors a checkpoint holds under the names the fields give them.
pub trait SelfSupervised: Module + Sized {
    /// `model.method`.
    const NAME: &'static str;
    /// The name its paper uses.
    const TITLE: &'static str;
    /// Where it stands among the others (`barlow compare`'s table, the README).
    const TRAITS: Traits;
    /// How its loss of the global batch is computed when the batch is spread over processes.
    const CROSSING: Crossing;
    /// The loss panel of `curves.png`.
    const PLOT: Plot;
    /// Whether it compares local crops too (`data.local_crops`), or the two global views only.
    const MULTI_CROP: bool;

    /// Its `[model]` settings besides the encoder and the projector, with its paper's defaults.
    type Settings: MethodSettings;
    /// What a step leaves for [`after_step`](Self::after_step) (MoCo's keys).
    type Carry;

    /// The method with fresh weights.
    fn init(settings: &Self::Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> Self;

    fn backbone(&self) -> &ResNet;

    /// The method with another encoder (`train --init`): what follows the encoder follows it.
    fn with_backbone(self, backbone: ResNet) -> Self;

    /// The projector's output (`N×D`) for one view: what `embed --projector` writes and the
    /// cross-correlation picture is drawn from.
    fn project(&self, images: Tensor<4>) -> Tensor<2>;

    /// The loss of a batch's views (this process's share of them) at `at`, and what the step
    /// leaves.
    fn forward(&self, crops: &Crops, batch: &Batchwide, at: Stage) -> (Loss, Self::Carry);

    /// The gradients the optimiser applies, from those of the loss averaged over the processes
    /// (a method that clips or holds some back).
    fn adjust_gradients(&self, grads: GradientsParams, _at: Stage) -> GradientsParams {
        grads
    }

    /// The method's state after the optimisation step at `at`.
    fn after_step(self, carry: Self::Carry, at: Stage) -> Self;
}

/// Where a step stands in training, as a method's schedules read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The step's number, 0-based.
    pub step: usize,
    /// Steps in the whole run.
    pub total: usize,
    pub steps_per_epoch: usize,
}

impl Stage {
    /// The one step of a one-step run: for checks of a single forward pass.
    pub const FIRST: Stage = Stage { step: 0, total: 1, steps_per_epoch: 1 };

    /// The epoch the step is in, 0-based.
    pub fn epoch(&self) -> usize {
        self.step / self.steps_per_epoch.max(1)
    }

    /// Epochs in the whole run.
    pub fn epochs(&self) -> usize {
        self.total.div_ceil(self.steps_per_epoch.max(1))
    }
}

/// A method's settings: a TOML table of `[model]` keys, every key with a default.
pub trait MethodSettings: Clone + std::fmt::Debug + PartialEq + Default + Serialize + DeserializeOwned {
    /// Fills in the defaults that depend on the projector's width `d` (a predictor ending at D).
    fn resolve(&mut self, _d: usize) {}

    /// Each setting within its range and in agreement with the rest of the run; errors name the
    /// key (`model.KEY`) and what is allowed.
    fn check(&self, run: &Setup) -> Result<()>;

    /// Each numeric key (`model.KEY`) and the range [`check`](Self::check) holds it to.
    fn ranges() -> Vec<(&'static str, Range)>;
}

/// What a method's settings are checked against besides themselves.
pub struct Setup<'a> {
    /// Images per step over all processes.
    pub batch_size: usize,
    pub projector: &'a [usize],
}

impl Setup<'_> {
    /// The embedding dimension D.
    pub fn d(&self) -> usize {
        self.projector.last().copied().unwrap_or(0)
    }
}

/// How a loss of the global batch is computed from the processes' shares of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// The method computes the global batch's loss itself, on every process, through
    /// [`Batchwide`]'s collectives (Barlow Twins' sum of C, SimCLR's and VICReg's gathered
    /// projections); the projector's BatchNorm is the global batch's.
    Global,
    /// A mean over the images: each process takes its shard's mean, and the averaged gradients
    /// are the global batch's. With `train.sync_bn` every BatchNorm (encoder, heads, momentum
    /// network) runs over the global batch, the papers' SyncBN; the logged loss is the mean over
    /// the processes.
    ShardMean,
}

/// Where a method stands among the others, as the papers position them (the qualitative
/// columns of `barlow compare`'s table and of the README).
#[derive(Clone, Copy, Debug)]
pub struct Traits {
    /// What the loss pushes each view away from.
    pub negatives: &'static str,
    pub momentum_encoder: bool,
    pub predictor: bool,
    /// What the loss asks of the views' embeddings.
    pub loss: &'static str,
    /// How the method's paper reports it to fare with small batches.
    pub batch_claim: &'static str,
}

/// How `curves.png` and `correlation.png` show a method's loss.
#[derive(Clone, Copy, Debug)]
pub struct Plot {
    /// The total's legend.
    pub total: &'static str,
    /// A log axis, for losses that stay above zero.
    pub log_scale: bool,
    /// What the cross-correlation of the projections should become, when the loss asks it.
    pub correlation_ideal: Option<&'static str>,
}

/// The views of one batch on the device, each `n×3×H×W`: the global crops at `data.size`
/// first, then the local crops (`data.local_crops` of them, smaller).
#[derive(Clone, Debug)]
pub struct Crops {
    pub global: Vec<Tensor<4>>,
    pub local: Vec<Tensor<4>>,
}

impl Crops {
    /// Two global views of the same images.
    pub fn pair(y1: Tensor<4>, y2: Tensor<4>) -> Crops {
        Crops { global: vec![y1, y2], local: vec![] }
    }

    /// The two global views, for a method that compares those only.
    pub fn two(&self) -> (Tensor<4>, Tensor<4>) {
        match &self.global[..] {
            [a, b] => (a.clone(), b.clone()),
            other => panic!("two global views expected, got {}", other.len()),
        }
    }
}
