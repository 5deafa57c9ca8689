//! MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv 2003.04297): queries from the encoder
//! against keys from its momentum copy, with a queue of past keys as the negatives (InfoNCE).
//! References: facebookresearch/moco `moco/builder.py`; solo-learn `mocov2plus.py` (the
//! symmetric loss with one queue per view).

use super::batchwide::Batchwide;
use super::heads::{draw, head};
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use super::momentum::{Momentum, TAU};
use crate::config::range::{POSITIVE, Range};
use crate::loss::{Loss, logsumexp, normalize};
use crate::model::{Projector, ResNet, ResNetConfig};
use anyhow::{Result, bail};
use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// MoCo v2's temperature.
pub const TEMPERATURE: f64 = 0.2;
/// MoCo's queue: 65,536 keys.
pub const QUEUE: usize = 65_536;
/// MoCo v2's constant momentum m = 0.999 (solo-learn's CIFAR recipe: 0.99 → 0.999).
pub const EMA: [f64; 2] = [0.999, 0.999];
/// `model.queue`: at most 2^24 keys.
pub const QUEUE_RANGE: Range = Range::closed(1.0, 16777216.0);

/// MoCo v2's `[model]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The softmax temperature τ, > 0.
    pub temperature: f64,
    /// Keys in the queue (per view when symmetric): a multiple of the batch size, 1 to 2^24.
    pub queue: usize,
    /// The symmetric loss (both views as queries, one queue per view).
    pub symmetric: bool,
    /// τ of the key encoder at the first step and at the last (cosine between), in [0, 1].
    pub ema: [f64; 2],
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { temperature: TEMPERATURE, queue: QUEUE, symmetric: false, ema: EMA }
    }
}

impl MethodSettings for Settings {
    fn check(&self, run: &Setup) -> Result<()> {
        POSITIVE.check("model.temperature", self.temperature)?;
        QUEUE_RANGE.check("model.queue", self.queue)?;
        self.ema.iter().try_for_each(|tau| TAU.check("model.ema", *tau))?;
        if !self.queue.is_multiple_of(run.batch_size) {
            bail!(
                "model.queue = {} is not a multiple of optim.batch_size = {}: MoCo replaces a whole batch of keys at \
                 a time (make the queue a multiple of every batch size you train with)",
                self.queue, run.batch_size
            );
        }
        Ok(())
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![("model.temperature", POSITIVE), ("model.queue", QUEUE_RANGE), ("model.ema", TAU)]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test).
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[
    ("moco-cifar10", "model.temperature", &["0.2", "1e-3"], &["0", "-1", "nan"]),
    ("moco-cifar10", "model.queue", &["256", "65536"], &["0", "33554432"]),
    ("moco-cifar10", "model.ema", &["[0.99, 1.0]", "[0.0, 0.0]"], &["[1.5, 1.0]", "[0.99, -0.1]", "[nan, 1.0]"]),
];

/// The query encoder and its MLP head, the key encoder following it, and the queue of keys.
#[derive(Module, Debug)]
pub struct MocoV2 {
    pub backbone: ResNet,
    pub projector: Projector,
    pub momentum: Momentum,
    pub queue: Queue,
    #[module(skip)]
    pub temperature: f64,
    #[module(skip)]
    pub symmetric: bool,
}

impl SelfSupervised for MocoV2 {
    const NAME: &'static str = "moco";
    const TITLE: &'static str = "MoCo v2";
    const TRAITS: Traits = Traits {
        negatives: "a queue of past keys",
        momentum_encoder: true,
        predictor: false,
        loss: "InfoNCE against the queue",
        batch_claim: "low: the queue decouples the negatives from the batch",
    };
    // A mean over the queries; the queue takes every process's keys (`concat_all_gather`).
    const CROSSING: Crossing = Crossing::ShardMean;
    const PLOT: Plot = Plot { total: "loss (InfoNCE)", log_scale: true, correlation_ideal: None };
    const MULTI_CROP: bool = false;
    type Settings = Settings;
    /// The step's keys (`views × N × D`, every process's).
    type Carry = Tensor<3>;

    fn init(s: &Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> MocoV2 {
        let d = *projector.last().expect("a projector layer");
        let head = |f| head(f, projector).with_hidden_norm(false).with_out_bias(true).init(device);
        let (backbone, projector) = draw(encoder, head, device);
        let momentum = Momentum::copy_of(&backbone, &projector, s.ema);
        let queue = Queue::new(if s.symmetric { 2 } else { 1 }, s.queue, d, device);
        MocoV2 { backbone, projector, momentum, queue, temperature: s.temperature, symmetric: s.symmetric }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> MocoV2 {
        let momentum = Momentum::copy_of(&backbone, &self.projector, self.momentum.tau);
        MocoV2 { backbone, momentum, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, batch: &Batchwide, _: Stage) -> (Loss, Tensor<3>) {
        let (y1, y2) = crops.two();
        let key = &self.momentum;
        let q_a = normalize(self.project(y1.clone()));
        let k_b = normalize(key.forward(y2.clone()));
        let (q_b, k_a) = match self.symmetric {
            true => (Some(normalize(self.project(y2))), Some(normalize(key.forward(y1)))),
            false => (None, None),
        };
        let (loss, keys) = moco_loss(q_a, q_b, k_a, k_b, &self.queue, self.temperature);
        (Loss::single(loss), batch.gather_keys(keys))
    }

    fn after_step(self, keys: Tensor<3>, at: Stage) -> MocoV2 {
        let momentum = self.momentum.follow(&self.backbone, &self.projector, at.step, at.total);
        MocoV2 { momentum, queue: self.queue.push(keys, at.step), ..self }
    }
}

/// The queue of past keys, one per view when the loss is symmetric (`views × K × D`, rows of
/// unit length): the negatives of the next steps. It takes no gradient.
#[derive(Module, Debug)]
pub struct Queue {
    pub keys: Param<Tensor<3>>,
}

impl Queue {
    /// Random unit keys, as MoCo starts (`normalize(randn(dim, K))`).
    pub fn new(views: usize, size: usize, dim: usize, device: &Device) -> Queue {
        let keys = Tensor::<3>::random([views, size, dim], Distribution::Normal(0.0, 1.0), device);
        let keys = normalize(keys.reshape([views * size, dim])).reshape([views, size, dim]);
        Queue { keys: Param::initialized(ParamId::new(), keys.set_require_grad(false)).set_require_grad(false) }
    }

    /// The negatives for view `v`'s keys (`K×D`).
    pub fn negatives(&self, v: usize) -> Tensor<2> {
        let [_, k, d] = self.keys.dims();
        self.keys.val().narrow(0, v, 1).reshape([k, d]).detach()
    }

    /// The queue after step `step` (0-based) enqueued its `keys` (`views × N × D`).
    pub fn push(self, keys: Tensor<3>, step: usize) -> Queue {
        Queue { keys: self.keys.map(|queue| enqueue(queue, keys.detach(), step)) }
    }
}

/// The queue after step `step` wrote its N keys over the oldest ones: at `ptr = step·N mod K`,
/// where MoCo's `queue_ptr` stands after `step` steps of N keys (K is a multiple of N).
pub fn enqueue(queue: Tensor<3>, keys: Tensor<3>, step: usize) -> Tensor<3> {
    let [views, size, dim] = queue.dims();
    let [_, n, _] = keys.dims();
    let ptr = step * n % size;
    queue.slice_assign([0..views, ptr..ptr + n, 0..dim], keys)
}

/// MoCo's InfoNCE of queries `q` against their keys `k` (`N×D`) and the queue's negatives
/// (`K×D`), all of unit length:
///
/// ```text
/// ℓ_i = −log( exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_j exp(q_i·n_j/τ)) ),   L = mean_i ℓ_i
/// ```
///
/// (`CrossEntropyLoss` of the logits `[l_pos, l_neg]/τ` against label 0, as `builder.py`).
pub fn infonce(q: Tensor<2>, k: Tensor<2>, negatives: Tensor<2>, temperature: f64) -> Tensor<1> {
    let positive = q.clone().mul(k.detach()).sum_dim(1);
    let negative = q.matmul(negatives.detach().transpose());
    let logits = Tensor::cat(vec![positive.clone(), negative], 1).div_scalar(temperature);
    (logsumexp(logits) - positive.div_scalar(temperature)).mean()
}

/// The MoCo v2 loss of the two views' queries (`q_a`, `q_b`) and keys (`k_a`, `k_b`), all
/// normalised. Asymmetric (the paper): `q_a` against `k_b`, the queue holding past `k_b`s.
/// Symmetric (solo-learn): the mean of that and `q_b` against `k_a`, each against the queue of
/// its key's view. Returns the loss and the keys to enqueue (`views × N × D`).
pub fn moco_loss(
    q_a: Tensor<2>,
    q_b: Option<Tensor<2>>,
    k_a: Option<Tensor<2>>,
    k_b: Tensor<2>,
    queue: &Queue,
    temperature: f64,
) -> (Tensor<1>, Tensor<3>) {
    match (q_b, k_a) {
        (Some(q_b), Some(k_a)) => {
            let loss = infonce(q_a, k_b.clone(), queue.negatives(1), temperature)
                + infonce(q_b, k_a.clone(), queue.negatives(0), temperature);
            (loss.div_scalar(2.0), Tensor::stack(vec![k_a, k_b], 0))
        }
        _ => (infonce(q_a, k_b.clone(), queue.negatives(0), temperature), k_b.unsqueeze()),
    }
}
