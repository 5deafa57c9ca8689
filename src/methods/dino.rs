//! DINO (Caron et al., ICCV 2021): self-distillation with no labels. A student matches, on
//! every crop, the centred and sharpened output of a teacher that is its own moving average and
//! sees the two global crops only. References: facebookresearch/dino `main_dino.py` (DINOLoss,
//! MultiCropWrapper, train_one_epoch), `vision_transformer.py` (DINOHead), `utils.py`
//! (clip_gradients, cancel_gradients_last_layer, cosine_scheduler).

use super::batchwide::Batchwide;
use super::heads::draw;
use super::method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};
use super::momentum::{self, Online, TAU, fresh_copy};
use crate::config::range::{NON_NEGATIVE, POSITIVE, Range, layers};
use crate::loss::{Loss, normalize};
use crate::model::{ResNet, ResNetConfig};
use crate::ops::modules::linear;
use anyhow::Result;
use burn::module::{Initializer, Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::{gelu, log_softmax, softmax};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// `main_dino.py`'s defaults: 65,536 prototypes, the teacher's τ from 0.996 to 1 by a cosine,
/// temperatures 0.1 (student) and 0.04 (teacher, no warm-up), centre momentum 0.9, gradients
/// clipped at norm 3 per parameter, the last layer frozen for the first epoch.
pub const OUT_DIM: usize = 65_536;
pub const EMA: [f64; 2] = [0.996, 1.0];
pub const STUDENT_TEMP: f64 = 0.1;
pub const TEACHER_TEMP: f64 = 0.04;
pub const CENTER_MOMENTUM: f64 = 0.9;
pub const CLIP_GRAD: f64 = 3.0;
pub const FREEZE_LAST_LAYER: usize = 1;

/// `model.out_dim`: 1 to 2^20 prototypes.
pub const OUT_DIM_RANGE: Range = Range::closed(1.0, 1_048_576.0);
/// `model.warmup_teacher_temp_epochs`, `model.freeze_last_layer`: 0 to 10^6 epochs.
pub const EPOCHS: Range = Range::closed(0.0, 1e6);

/// DINO's `[model]` settings, named as `main_dino.py`'s arguments (`ema` is its
/// `momentum_teacher` and the final 1, as for the other momentum networks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Outputs of the last layer (the prototypes K), 1 to 2^20.
    pub out_dim: usize,
    /// The last layer's rows kept at unit length (its weight-norm gain fixed at 1).
    pub norm_last_layer: bool,
    /// τ of the teacher at the first step and at the last (cosine between), in [0, 1].
    pub ema: [f64; 2],
    /// The student's softmax temperature, > 0.
    pub student_temp: f64,
    /// The teacher's temperature after its warm-up, > 0.
    pub teacher_temp: f64,
    /// The teacher's temperature at the first epoch, > 0; linear to `teacher_temp` over
    /// `warmup_teacher_temp_epochs` (0 to 10^6).
    pub warmup_teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    /// How much of the centre stays at each step, in [0, 1].
    pub center_momentum: f64,
    /// Each parameter's gradient clipped to this norm, ≥ 0 (0: no clipping).
    pub clip_grad: f64,
    /// Epochs (0 to 10^6) during which the last layer is not updated.
    pub freeze_last_layer: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            out_dim: OUT_DIM,
            norm_last_layer: true,
            ema: EMA,
            student_temp: STUDENT_TEMP,
            teacher_temp: TEACHER_TEMP,
            warmup_teacher_temp: TEACHER_TEMP,
            warmup_teacher_temp_epochs: 0,
            center_momentum: CENTER_MOMENTUM,
            clip_grad: CLIP_GRAD,
            freeze_last_layer: FREEZE_LAST_LAYER,
        }
    }
}

impl MethodSettings for Settings {
    fn check(&self, run: &Setup) -> Result<()> {
        // The head: hidden layers with GELU, then the bottleneck (the last width).
        layers("model.projector", run.projector)?;
        OUT_DIM_RANGE.check("model.out_dim", self.out_dim)?;
        self.ema.iter().try_for_each(|tau| TAU.check("model.ema", *tau))?;
        POSITIVE.check("model.student_temp", self.student_temp)?;
        POSITIVE.check("model.teacher_temp", self.teacher_temp)?;
        POSITIVE.check("model.warmup_teacher_temp", self.warmup_teacher_temp)?;
        EPOCHS.check("model.warmup_teacher_temp_epochs", self.warmup_teacher_temp_epochs)?;
        TAU.check("model.center_momentum", self.center_momentum)?;
        NON_NEGATIVE.check("model.clip_grad", self.clip_grad)?;
        EPOCHS.check("model.freeze_last_layer", self.freeze_last_layer)
    }

    fn ranges() -> Vec<(&'static str, Range)> {
        vec![
            ("model.out_dim", OUT_DIM_RANGE), ("model.ema", TAU), ("model.student_temp", POSITIVE),
            ("model.teacher_temp", POSITIVE), ("model.warmup_teacher_temp", POSITIVE),
            ("model.warmup_teacher_temp_epochs", EPOCHS), ("model.center_momentum", TAU),
            ("model.clip_grad", NON_NEGATIVE), ("model.freeze_last_layer", EPOCHS),
        ]
    }
}

/// Values its keys take and refuse, by name (`config::valid`'s table test).
#[cfg(test)]
pub const KEY_CASES: &[crate::config::valid::KeyCase] = &[
    ("dino-cifar10", "model.out_dim", &["1", "65536"], &["0", "2000000"]),
    ("dino-cifar10", "model.student_temp", &["0.1", "1"], &["0", "-0.1", "nan", "inf"]),
    ("dino-cifar10", "model.teacher_temp", &["0.04", "0.07"], &["0", "-1", "nan"]),
    ("dino-cifar10", "model.warmup_teacher_temp", &["0.04"], &["0", "nan"]),
    ("dino-cifar10", "model.warmup_teacher_temp_epochs", &["0", "30"], &["2000000"]),
    ("dino-cifar10", "model.center_momentum", &["0", "0.9", "1"], &["-0.1", "1.5", "nan"]),
    ("dino-cifar10", "model.clip_grad", &["0", "3.0"], &["-1", "nan", "inf"]),
    ("dino-cifar10", "model.freeze_last_layer", &["0", "1"], &["2000000"]),
];

/// The student (encoder and DINO head), the teacher following it, and the centre of the
/// teacher's outputs.
#[derive(Module, Debug)]
pub struct Dino {
    pub backbone: ResNet,
    pub head: DinoHead,
    pub teacher: Teacher,
    /// `1×K`, no gradient.
    pub center: Param<Tensor<2>>,
    #[module(skip)]
    pub settings: Settings,
}

/// The teacher: the student's moving average, with BatchNorm statistics of its own.
#[derive(Module, Debug)]
pub struct Teacher {
    pub backbone: ResNet,
    pub head: DinoHead,
}

impl Teacher {
    fn of(backbone: &ResNet, head: &DinoHead) -> Teacher {
        fresh_copy(&Teacher { backbone: backbone.clone(), head: head.clone() })
    }

    /// The teacher's outputs for the global crops (`2n×K`, crop after crop), with no gradient.
    pub fn forward(&self, global: &[Tensor<4>]) -> Tensor<2> {
        self.head.forward(self.backbone.forward(Tensor::cat(global.to_vec(), 0))).detach()
    }
}

/// DINO's head: Linear layers with GELU between them (no BatchNorm, biases), the output
/// L2-normalised, then a weight-normalised Linear without bias to the K prototypes.
#[derive(Module, Debug)]
pub struct DinoHead {
    pub mlp: Vec<Linear>,
    pub last_layer: WeightNormed,
}

/// `nn.utils.weight_norm(nn.Linear(B, K, bias=False))`: W = g·V/‖V‖, each prototype's norm
/// taken over its B inputs (`V` is `B×K`, burn's layout); without `g` the gain is 1
/// (`norm_last_layer`).
#[derive(Module, Debug)]
pub struct WeightNormed {
    pub weight_v: Param<Tensor<2>>,
    pub weight_g: Option<Param<Tensor<1>>>,
}

impl DinoHead {
    /// `sizes` as `model.projector` gives them (hidden widths, then the bottleneck), initialised
    /// as `DINOHead`: MLP weights N(0, 0.02) (its truncation at ±2 is 100σ away), biases 0; the
    /// last layer PyTorch's Linear default, U(±1/√B), gain 1.
    pub fn init(d_input: usize, sizes: &[usize], out_dim: usize, norm_last_layer: bool, device: &Device) -> DinoHead {
        let mut d = d_input;
        let mlp = sizes
            .iter()
            .map(|&o| {
                let mut layer = LinearConfig::new(d, o).with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 }).init(device);
                layer.bias = Some(Param::from_tensor(Tensor::zeros([o], device)));
                d = o;
                layer
            })
            .collect();
        let weight_v = LinearConfig::new(d, out_dim).with_bias(false).init(device).weight;
        let weight_g = (!norm_last_layer).then(|| Param::from_tensor(Tensor::ones([out_dim], device)));
        DinoHead { mlp, last_layer: WeightNormed { weight_v, weight_g } }
    }

    /// The bottleneck features (`N×B`), before normalisation.
    pub fn bottleneck(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.mlp.len() - 1;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = linear(layer, x);
            if i < last {
                x = gelu(x);
            }
        }
        x
    }

    /// The logits over the prototypes (`N×K`).
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        normalize(self.bottleneck(features)).matmul(self.last_layer.weight())
    }
}

impl WeightNormed {
    /// The effective weight g·V/‖V‖ (`B×K`).
    pub fn weight(&self) -> Tensor<2> {
        let v = self.weight_v.val();
        let w = v.clone() / v.square().sum_dim(0).sqrt();
        match &self.weight_g {
            Some(g) => w * g.val().unsqueeze::<2>(),
            None => w,
        }
    }
}

impl SelfSupervised for Dino {
    const NAME: &'static str = "dino";
    const TITLE: &'static str = "DINO";
    const TRAITS: Traits = Traits {
        negatives: "none: a centred, sharpened teacher",
        momentum_encoder: true,
        predictor: false,
        loss: "cross-entropy of the student to the teacher, over crops",
        batch_claim: "low: trains from batches of 128 (its batch-size ablation)",
    };
    // A mean over the images; the centre takes every process's teacher outputs (all_reduce).
    const CROSSING: Crossing = Crossing::ShardMean;
    const PLOT: Plot = Plot { total: "loss (cross-entropy, teacher → student)", log_scale: true, correlation_ideal: None };
    const MULTI_CROP: bool = true;
    type Settings = Settings;
    /// The step's batch centre, the mean teacher output over every process's images (`1×K`).
    type Carry = Tensor<2>;

    fn init(s: &Settings, encoder: &ResNetConfig, projector: &[usize], device: &Device) -> Dino {
        let head = |f| DinoHead::init(f, projector, s.out_dim, s.norm_last_layer, device);
        let (backbone, head) = draw(encoder, head, device);
        let teacher = Teacher::of(&backbone, &head);
        let zeros = Tensor::<2>::zeros([1, s.out_dim], device).set_require_grad(false);
        let center = Param::initialized(ParamId::new(), zeros).set_require_grad(false);
        Dino { backbone, head, teacher, center, settings: s.clone() }
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    fn with_backbone(self, backbone: ResNet) -> Dino {
        let teacher = Teacher::of(&backbone, &self.head);
        Dino { backbone, teacher, ..self }
    }

    fn project(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.bottleneck(self.backbone.forward(images))
    }

    fn forward(&self, crops: &Crops, batch: &Batchwide, at: Stage) -> (Loss, Tensor<2>) {
        let s = &self.settings;
        let teacher = self.teacher.forward(&crops.global);
        let temp = teacher_temp(s, at.epoch());
        let loss = dino_loss(self.student(crops), teacher.clone(), self.center.val(), crops.global.len(), s.student_temp, temp);
        (Loss::single(loss), batch_center(teacher, batch))
    }

    /// `clip_gradients` (each parameter's gradient to norm `clip_grad`), then
    /// `cancel_gradients_last_layer` (none for the last layer during its frozen epochs, so the
    /// optimiser leaves it as it is).
    fn adjust_gradients(&self, mut grads: GradientsParams, at: Stage) -> GradientsParams {
        if self.settings.clip_grad > 0.0 {
            let mut clip = Clip { grads: &mut grads, max: self.settings.clip_grad };
            self.backbone.visit(&mut clip);
            self.head.visit(&mut clip);
        }
        if at.epoch() < self.settings.freeze_last_layer {
            self.head.last_layer.visit(&mut Cancel { grads: &mut grads });
        }
        grads
    }

    fn after_step(self, batch_center: Tensor<2>, at: Stage) -> Dino {
        let online = Online::default().read(&self.backbone).read(&self.head);
        let (teacher, online) = online.move_towards(self.teacher, momentum::tau(self.settings.ema, at.step, at.total));
        assert!(online.is_empty(), "the teacher has the student's shape");
        let m = self.settings.center_momentum;
        let center = self.center.map(|c| moving_center(c, batch_center, m));
        Dino { teacher, center, ..self }
    }
}

impl Dino {
    /// The student's outputs for every crop (`(2 + K)·n × K`, crop after crop), the encoder run
    /// once per resolution (`MultiCropWrapper`: its BatchNorm over all crops of a size).
    pub fn student(&self, crops: &Crops) -> Tensor<2> {
        let mut features = vec![self.backbone.forward(Tensor::cat(crops.global.clone(), 0))];
        if !crops.local.is_empty() {
            features.push(self.backbone.forward(Tensor::cat(crops.local.clone(), 0)));
        }
        self.head.forward(Tensor::cat(features, 0))
    }
}

/// The teacher's temperature at `epoch` (0-based): `np.linspace(warmup_teacher_temp,
/// teacher_temp, warmup_teacher_temp_epochs)`, then `teacher_temp`.
pub fn teacher_temp(s: &Settings, epoch: usize) -> f64 {
    let warmup = s.warmup_teacher_temp_epochs;
    match epoch < warmup {
        true if warmup == 1 => s.warmup_teacher_temp,
        true => s.warmup_teacher_temp + (s.teacher_temp - s.warmup_teacher_temp) * epoch as f64 / (warmup - 1) as f64,
        false => s.teacher_temp,
    }
}

/// DINO's loss of the student's outputs for every crop (`crops·n × K`, crop after crop) against
/// the teacher's for the `global` crops (`global·n × K`), with the teacher centred by `center`:
///
/// ```text
/// P_v = softmax(s_v / τ_s),   Q_g = softmax((t_g − c) / τ_t)   (no gradient)
/// L = mean over the pairs g ≠ v of  mean_i  −Σ_k Q_g[i,k] · log P_v[i,k]
/// ```
pub fn dino_loss(student: Tensor<2>, teacher: Tensor<2>, center: Tensor<2>, global: usize, student_temp: f64, teacher_temp: f64)
    -> Tensor<1> {
    let n = teacher.dims()[0] / global;
    let crops = student.dims()[0] / n;
    let q = softmax((teacher - center).div_scalar(teacher_temp), 1).detach();
    let log_p = log_softmax(student.div_scalar(student_temp), 1);
    let pairs: Vec<Tensor<1>> = (0..global)
        .flat_map(|g| (0..crops).filter(move |v| *v != g).map(move |v| (g, v)))
        .map(|(g, v)| (q.clone().narrow(0, g * n, n) * log_p.clone().narrow(0, v * n, n)).sum_dim(1).mean().neg())
        .collect();
    let terms = pairs.len();
    Tensor::cat(pairs, 0).sum().div_scalar(terms as f64)
}

/// The mean of the teacher's outputs over every process's images (`1×K`; `update_center`'s
/// all-reduced sum over `len(teacher_output) · world_size`).
pub fn batch_center(teacher: Tensor<2>, batch: &Batchwide) -> Tensor<2> {
    let [_, k] = teacher.dims();
    batch.mean(teacher.mean_dim(0).reshape([k])).reshape([1, k])
}

/// The centre after a step: `c ← m·c + (1 − m)·batch_center`.
pub fn moving_center(center: Tensor<2>, batch_center: Tensor<2>, m: f64) -> Tensor<2> {
    center.mul_scalar(m) + batch_center.mul_scalar(1.0 - m)
}

/// Scales each gradient to norm `max` where it is larger (`clip_coef = max / (‖g‖ + 1e-6)`),
/// on the device: a factor of exactly 1 elsewhere.
struct Clip<'a> {
    grads: &'a mut GradientsParams,
    max: f64,
}

impl ModuleVisitor for Clip<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = self.grads.remove::<D>(param.id) else { return };
        let norm = grad.clone().square().sum().sqrt();
        let coef = norm.add_scalar(1e-6).recip().mul_scalar(self.max).clamp_max(1.0);
        self.grads.register::<D>(param.id, grad * coef.reshape([1; D]));
    }
}

/// Drops the gradients of the parameters it visits.
struct Cancel<'a> {
    grads: &'a mut GradientsParams,
}

impl ModuleVisitor for Cancel<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.grads.remove::<D>(param.id);
    }
}
