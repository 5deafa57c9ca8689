//! The self-supervised methods, one file each, over one trainer: Barlow Twins, SimCLR, MoCo v2,
//! BYOL, SimSiam and VICReg.
//!
//! Every method is the same encoder (`backbone`, a torchvision-named ResNet) with its heads
//! (projector, predictor), its loss of the two views, and its extra state (the momentum network,
//! the queue of keys), all in one [`Model`]. The trainer, checkpoints, the kNN monitor,
//! evaluation, export and plots see only the `Model`; [`Model::forward_step`] and
//! [`Model::after_step`] are where the methods differ. Each loss is a pure function of the two
//! views' embeddings (and the queue), so that a distributed version can swap batch-wide
//! quantities for all-reduced ones.

pub mod barlow;
pub mod byol;
pub mod moco;
pub mod momentum;
mod settings;
pub mod simclr;
pub mod simsiam;
pub mod vicreg;

use crate::loss::{Loss, normalize};
use crate::model::{Projector, ProjectorConfig, ResNet, ResNetConfig};
use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use moco::Queue;
use momentum::Momentum;
use serde::{Deserialize, Serialize};

/// Which method trains the encoder (`model.method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    #[default]
    Barlow,
    Simclr,
    Moco,
    Byol,
    Simsiam,
    Vicreg,
}

impl Method {
    pub const ALL: [Method; 6] = [Method::Barlow, Method::Simclr, Method::Moco, Method::Byol, Method::Simsiam, Method::Vicreg];

    /// The name configs and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Method::Barlow => "barlow",
            Method::Simclr => "simclr",
            Method::Moco => "moco",
            Method::Byol => "byol",
            Method::Simsiam => "simsiam",
            Method::Vicreg => "vicreg",
        }
    }

    /// The name its paper uses.
    pub fn title(self) -> &'static str {
        match self {
            Method::Barlow => "Barlow Twins",
            Method::Simclr => "SimCLR",
            Method::Moco => "MoCo v2",
            Method::Byol => "BYOL",
            Method::Simsiam => "SimSiam",
            Method::Vicreg => "VICReg",
        }
    }

    /// The `[model]` settings of this method besides the encoder and the projector.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Method::Barlow => &["lambda"],
            Method::Simclr => &["temperature"],
            Method::Moco => &["temperature", "queue", "symmetric", "ema"],
            Method::Byol => &["predictor", "ema"],
            Method::Simsiam => &["predictor"],
            Method::Vicreg => &["invariance", "variance", "covariance"],
        }
    }

    pub fn has_predictor(self) -> bool {
        self.keys().contains(&"predictor")
    }

    /// The projector's and the predictor's layer types, as the reference code builds them.
    /// Biases before a BatchNorm are left out everywhere: the BatchNorm removes them.
    fn heads(self, d_input: usize, projector: &[usize], predictor: Option<&[usize]>) -> (ProjectorConfig, Option<ProjectorConfig>) {
        let head = |d, sizes: &[usize]| ProjectorConfig::new(d).with_sizes(sizes.to_vec());
        let p = head(d_input, projector);
        let p = match self {
            Method::Barlow | Method::Vicreg => p,
            // Linear → ReLU → Linear, biases and no BatchNorm (SimCLR's g(·), MoCo v2's MLP).
            Method::Simclr | Method::Moco => p.with_hidden_norm(false).with_out_bias(true),
            Method::Byol => p.with_out_bias(true),
            // Every layer batch-normalised, the output without affine parameters.
            Method::Simsiam => p.with_out_norm(true),
        };
        let d = *projector.last().expect("a projector layer");
        (p, predictor.map(|sizes| head(d, sizes).with_out_bias(true)))
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method `{s}` (model.method is one of {})", names.join(", "))
        })
    }
}

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.name().to_string()
    }
}

/// Where a method stands among the others, as the papers position them (the qualitative
/// columns of `barlow compare`'s table and of the README).
#[derive(Clone, Copy, Debug)]
pub struct Traits {
    /// What the loss pushes each view away from.
    pub negatives: &'static str,
    pub momentum_encoder: bool,
    pub predictor: bool,
    /// What the loss asks of the two views' embeddings.
    pub loss: &'static str,
    /// How the method's paper reports it to fare with small batches.
    pub batch_claim: &'static str,
}

impl Method {
    pub fn traits(self) -> Traits {
        let t = |negatives, momentum_encoder, predictor, loss, batch_claim| Traits { negatives, momentum_encoder, predictor, loss, batch_claim };
        match self {
            Method::Barlow => t("none", false, false, "cross-correlation of the views → identity",
                "low: robust to small batches (its batch-size ablation, vs SimCLR and BYOL)"),
            Method::Simclr => t("the other 2N − 2 views of the batch", false, false, "NT-Xent (InfoNCE over the batch)",
                "high: gains with batches up to 8192 (its Fig. 9)"),
            Method::Moco => t("a queue of past keys", true, false, "InfoNCE against the queue",
                "low: the queue decouples the negatives from the batch"),
            Method::Byol => t("none", true, true, "2 − 2·cos(prediction, target)",
                "low from 256 to 4096, lower below (its Fig. 3a)"),
            Method::Simsiam => t("none", false, true, "−cos(prediction, stop-grad projection)",
                "low: 64 to 2048 within 2 points (its Table 2)"),
            Method::Vicreg => t("none", false, false, "invariance + variance hinge + covariance",
                "low: no large batch needed (as Barlow Twins)"),
        }
    }
}

/// A method's loss and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    Barlow { lambda: f64 },
    Simclr { temperature: f64 },
    Moco { temperature: f64, symmetric: bool },
    Byol,
    Simsiam,
    Vicreg(vicreg::Weights),
}

impl Objective {
    pub fn method(&self) -> Method {
        match self {
            Objective::Barlow { .. } => Method::Barlow,
            Objective::Simclr { .. } => Method::Simclr,
            Objective::Moco { .. } => Method::Moco,
            Objective::Byol => Method::Byol,
            Objective::Simsiam => Method::Simsiam,
            Objective::Vicreg(_) => Method::Vicreg,
        }
    }
}

/// Everything a [`Model`] is built from.
#[derive(Clone, Debug)]
pub struct MethodConfig {
    pub encoder: ResNetConfig,
    /// Projector (VICReg: expander) widths; the last is the embedding dimension D.
    pub projector: Vec<usize>,
    /// Predictor widths (BYOL, SimSiam), ending at D.
    pub predictor: Option<Vec<usize>>,
    pub objective: Objective,
    /// MoCo's queue: keys per view.
    pub queue: Option<usize>,
    /// τ of the momentum network (MoCo, BYOL), at the first step and at the last.
    pub ema: Option<[f64; 2]>,
}

impl MethodConfig {
    /// Barlow Twins with `projector` widths and λ.
    pub fn barlow(encoder: ResNetConfig, projector: Vec<usize>, lambda: f64) -> MethodConfig {
        MethodConfig { encoder, projector, predictor: None, objective: Objective::Barlow { lambda }, queue: None, ema: None }
    }

    pub fn method(&self) -> Method {
        self.objective.method()
    }

    /// The model, with fresh weights. The heads are drawn before the encoder (Barlow Twins' runs
    /// have always drawn the projector first).
    pub fn init(&self, device: &Device) -> Model {
        // The encoder ends at the pooled features: the heads replace `fc`.
        let encoder = self.encoder.clone().with_num_classes(None);
        let (projector, predictor) = self.method().heads(encoder.feature_dim(), &self.projector, self.predictor.as_deref());
        let projector = projector.init(device);
        let predictor = predictor.map(|p| p.init(device));
        let backbone = encoder.init(device);
        let momentum = self.ema.map(|tau| Momentum::copy_of(&backbone, &projector, tau));
        let symmetric = matches!(self.objective, Objective::Moco { symmetric: true, .. });
        let d = *self.projector.last().expect("a projector layer");
        let queue = self.queue.map(|k| Queue::new(if symmetric { 2 } else { 1 }, k, d, device));
        Model { backbone, projector, predictor, momentum, queue, objective: self.objective.clone() }
    }
}

/// An encoder trained by one of the methods: the online network, and the method's state.
#[derive(Module, Debug)]
pub struct Model {
    pub backbone: ResNet,
    pub projector: Projector,
    pub predictor: Option<Projector>,
    /// MoCo's key encoder, BYOL's target network: an EMA of `backbone` and `projector`.
    pub momentum: Option<Momentum>,
    /// MoCo's queue of keys.
    pub queue: Option<Queue>,
    #[module(skip)]
    pub objective: Objective,
}

/// What a step leaves for [`Model::after_step`]: MoCo's new keys (`views × N × D`).
pub struct StepState {
    keys: Option<Tensor<3>>,
}

impl StepState {
    /// A step of a method without such state.
    pub fn none() -> StepState {
        StepState { keys: None }
    }

    /// The same state with MoCo's keys (`views × N × D`) replaced by `f(keys)`: in a
    /// data-parallel step, every worker's keys, so that every worker enqueues the global batch.
    pub fn map_keys(self, f: impl FnOnce(Tensor<3>) -> Tensor<3>) -> StepState {
        StepState { keys: self.keys.map(f) }
    }
}

impl Model {
    pub fn method(&self) -> Method {
        self.objective.method()
    }

    /// Projector outputs `z` (`N×D`) of one view.
    pub fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn predict(&self, z: Tensor<2>) -> Tensor<2> {
        self.predictor.as_ref().expect("the method's predictor").forward(z)
    }

    fn momentum(&self) -> &Momentum {
        self.momentum.as_ref().expect("the method's momentum network")
    }

    /// The loss of two views `y1`, `y2` of the same images, each `N×3×H×W`.
    pub fn forward(&self, y1: Tensor<4>, y2: Tensor<4>) -> Loss {
        self.forward_step(y1, y2).0
    }

    /// The loss of the views' projections (`N×D` each) for a method whose loss reads nothing
    /// else (SimCLR, VICReg; Barlow Twins has its own data-parallel path): what data-parallel
    /// training computes on every process's projections gathered. `None` for the others.
    pub fn loss_of_projections(&self, z_a: Tensor<2>, z_b: Tensor<2>) -> Option<Loss> {
        match &self.objective {
            Objective::Simclr { temperature } => Some(Loss::single(simclr::nt_xent(z_a, z_b, *temperature))),
            Objective::Vicreg(weights) => Some(vicreg::vicreg_loss(z_a, z_b, *weights)),
            _ => None,
        }
    }

    /// The loss of two views, and what the step leaves for [`after_step`](Self::after_step).
    pub fn forward_step(&self, y1: Tensor<4>, y2: Tensor<4>) -> (Loss, StepState) {
        let none = StepState::none();
        match &self.objective {
            Objective::Barlow { lambda } => (barlow::barlow_loss(self.project(y1), self.project(y2), *lambda).into(), none),
            Objective::Simclr { temperature } => {
                (Loss::single(simclr::nt_xent(self.project(y1), self.project(y2), *temperature)), none)
            }
            Objective::Vicreg(weights) => (vicreg::vicreg_loss(self.project(y1), self.project(y2), *weights), none),
            Objective::Byol => {
                let (z1, z2) = (self.project(y1.clone()), self.project(y2.clone()));
                let target = self.momentum();
                let loss = byol::byol_loss(self.predict(z1), self.predict(z2), target.forward(y1), target.forward(y2));
                (Loss::single(loss), none)
            }
            Objective::Simsiam => {
                let (z1, z2) = (self.project(y1), self.project(y2));
                let loss = simsiam::simsiam_loss(self.predict(z1.clone()), self.predict(z2.clone()), z1, z2);
                (Loss::single(loss), none)
            }
            Objective::Moco { temperature, symmetric } => {
                let key = self.momentum();
                let queue = self.queue.as_ref().expect("MoCo's queue");
                let q_a = normalize(self.project(y1.clone()));
                let k_b = normalize(key.forward(y2.clone()));
                let (q_b, k_a) = match symmetric {
                    true => (Some(normalize(self.project(y2))), Some(normalize(key.forward(y1)))),
                    false => (None, None),
                };
                let (loss, keys) = moco::moco_loss(q_a, q_b, k_a, k_b, queue, *temperature);
                (Loss::single(loss), StepState { keys: Some(keys) })
            }
        }
    }

    /// The method's state after optimisation step `step` (0-based) of `total`: the momentum
    /// network moves towards the updated online one, the step's keys replace the oldest.
    pub fn after_step(self, state: StepState, step: usize, total: usize) -> Model {
        let momentum = self.momentum.map(|m| m.follow(&self.backbone, &self.projector, step, total));
        let queue = match (self.queue, state.keys) {
            (Some(queue), Some(keys)) => Some(queue.push(keys, step)),
            (queue, _) => queue,
        };
        Model { momentum, queue, ..self }
    }

    /// The model with another encoder (`train --init`), the momentum copy following it.
    pub fn with_backbone(self, backbone: ResNet) -> Model {
        let momentum = self.momentum.map(|m| Momentum::copy_of(&backbone, &self.projector, m.tau));
        Model { backbone, momentum, ..self }
    }
}

/// A `[model]` setting of some methods, and whether the config gives it.
pub struct Setting {
    pub key: &'static str,
    pub given: bool,
}

/// Refuses settings that `method` does not have, naming the key and the methods that have it.
pub fn check_settings(method: Method, settings: &[Setting]) -> Result<()> {
    if let Some(s) = settings.iter().find(|s| s.given && !method.keys().contains(&s.key)) {
        let owners: Vec<_> = Method::ALL.iter().filter(|m| m.keys().contains(&s.key)).map(|m| m.name()).collect();
        let what = match s.key {
            "predictor" => "no predictor".to_string(),
            "queue" => "no queue".to_string(),
            "ema" => "no momentum network".to_string(),
            key => format!("no `{key}`"),
        };
        bail!(
            "model.{} is set, but model.method = \"{method}\" has {what} (only {} use model.{}); remove it, or start \
             from the method's own preset (`--config {method}-cifar10`)",
            s.key, owners.join(" and "), s.key
        );
    }
    Ok(())
}
