//! The tables of a run configuration — `[data]`, `[model]`, `[optim]`, `[train]` — with their
//! defaults.

use crate::optim::{LrScaling, TrustRatio};
use super::model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// cifar10, cifar100, stl10, mnist, fashion-mnist, fashion-mnist-sample, folder.
    pub dataset: String,
    /// Where the dataset lies; found or downloaded into the cache when absent.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Augmentation preset: `imagenet` (the paper's) or `cifar` (no blur).
    pub views: String,
    /// Side of the square crops, in pixels: 8 to 4096.
    pub size: usize,
    /// Use only the first N training images (quick experiments): at least 1.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Loader threads (0: all cores), at most 1024.
    #[serde(default)]
    pub workers: usize,
    /// Image files with more pixels than this are refused before they are decoded
    /// (decompression bombs): 1 to 2^32 [default: 178,956,970, PIL's limit].
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// The area fraction the global crops cover (RandomResizedCrop's `scale`), `[lo, hi]` with
    /// 0 < lo < hi ≤ 1 [default: torchvision's 0.08, 1].
    #[serde(default = "default_global_scale")]
    pub global_scale: [f64; 2],
    /// Multi-crop: local crops per image besides the two global views, 0 to 64 [default: 0],
    /// for methods that compare them (DINO's `local_crops_number`).
    #[serde(default)]
    pub local_crops: usize,
    /// Side of the local crops, in pixels: 8 to 4096 [default: DINO's 96].
    #[serde(default = "default_local_size")]
    pub local_size: usize,
    /// The area fraction the local crops cover, `[lo, hi]` [default: DINO's 0.05, 0.4].
    #[serde(default = "default_local_scale")]
    pub local_scale: [f64; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// lars (the default: the official code's) or sgd (PyTorch's, with momentum).
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Images per step over all processes: 2 to 2^20.
    pub batch_size: usize,
    /// 1 to 10^6.
    pub epochs: usize,
    /// Epochs of linear warm-up: 0 to 10^6 (more than `epochs`: the run ends warming up).
    pub warmup_epochs: usize,
    /// Learning rate of the weights per 256 images, > 0.
    pub lr_weights: f64,
    /// Learning rate of biases and BatchNorm parameters per 256 images, ≥ 0 [default: lr_weights].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_biases: Option<f64>,
    /// How the rates grow with the batch: linear (× batch/256) or sqrt (× √(batch/256)).
    #[serde(default)]
    pub lr_scaling: LrScaling,
    /// Keep the predictor at its initial learning rate (SimSiam's `--fix-pred-lr`).
    #[serde(default)]
    pub fix_predictor_lr: bool,
    /// ≥ 0.
    pub weight_decay: f64,
    /// In [0, 1).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// LARS's trust coefficient η, > 0.
    #[serde(default = "default_eta")]
    pub eta: f64,
    /// The warm-up's first learning rate of the weights (the batch-scaled rate, as solo-learn's
    /// `warmup_start_lr`), ≥ 0: the warm-up then runs linearly to the peak at its last step, as
    /// solo-learn's and DINO's do [default: the official code's, from 0, peak · step / warm-up].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_start_lr: Option<f64>,
    /// The weights' learning rate at the end of the cosine (solo-learn's and DINO's `min_lr`), ≥ 0
    /// and at most the peak [default: 0.001 × the peak, the official code's]. The biases'
    /// rate follows the same curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// Biases and BatchNorm parameters without weight decay: LARS always leaves them out (the
    /// official code's `exclude_bias_and_norm`); SGD decays them unless this is true (DINO's
    /// parameter groups) [default: each optimiser's own].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_bias_and_norm: Option<bool>,
    /// LARS's trust ratio: update (η‖w‖/‖g + λw‖, the official code's) or sum
    /// (η‖w‖/(‖g‖ + λ‖w‖ + ε), the LARS paper's and solo-learn's).
    #[serde(default)]
    pub trust_ratio: TrustRatio,
    /// LARC's clipping of LARS's rate at the scheduled one (solo-learn's `clip_lr`).
    #[serde(default)]
    pub clip_lr: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    #[default]
    Lars,
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default)]
    pub seed: u64,
    /// Backend: auto, flex, ndarray, cpu, cuda, wgpu, tch.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Run the kNN monitor every this many epochs (0: never).
    #[serde(default = "default_knn_every")]
    pub knn_every: usize,
    /// The kNN monitor's neighbours: at least 1.
    #[serde(default = "default_knn_k")]
    pub knn_k: usize,
    /// The kNN monitor's temperature, > 0.
    #[serde(default = "default_knn_t")]
    pub knn_t: f64,
    /// The kNN monitor uses this many images of each labeled split (spread over it), at least 1
    /// [default: all].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_limit: Option<usize>,
    /// Stop after this many optimisation steps in this invocation (tests, smoke runs): at least 1.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Read the loss back from the device every this many steps (and at each epoch's end), to
    /// log it and stop on a non-finite one; in between, the device is never waited for. At least 1.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// `f32`, or `bf16`: convolutions and matrix products on bfloat16 operands (BatchNorm, the
    /// loss, the weights and LARS stay f32). Pays off on GPUs with bf16 tensor cores; on a CPU
    /// it is slower than f32.
    #[serde(default)]
    pub precision: crate::ops::precision::Precision,
    /// Data-parallel runs (`mpirun -np W barlow train`): BatchNorm in the encoder over the
    /// global batch (SyncBatchNorm), as the official code converts every BatchNorm; the
    /// projector's and the loss's always are. On by default for Barlow Twins, so that W workers
    /// compute exactly what one process with the global batch does, whatever W is; off, the
    /// encoder normalises over each worker's shard (less communication, results depend on W).
    #[serde(default = "default_true")]
    pub sync_bn: bool,
    /// Data-parallel runs: seconds a collective may wait for the other workers before this
    /// worker gives up and ends the job (a hung rank); 0 waits for ever.
    #[serde(default = "default_dist_timeout")]
    pub dist_timeout: u64,
}

impl OptimConfig {
    /// The weights' peak learning rate: `lr_weights` scaled to the batch.
    pub fn peak_lr(&self) -> f64 {
        self.lr_weights * self.lr_scaling.factor(self.batch_size)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            backend: default_backend(),
            knn_every: default_knn_every(),
            knn_k: default_knn_k(),
            knn_t: default_knn_t(),
            knn_limit: None,
            max_steps: None,
            log_every: default_log_every(),
            precision: Default::default(),
            sync_bn: true,
            dist_timeout: default_dist_timeout(),
        }
    }
}

fn default_max_pixels() -> u64 {
    crate::data::decode::MAX_PIXELS
}
fn default_global_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_local_size() -> usize {
    96
}
fn default_local_scale() -> [f64; 2] {
    [0.05, 0.4]
}
fn default_momentum() -> f64 {
    0.9
}
fn default_eta() -> f64 {
    0.001
}
fn default_backend() -> String {
    "auto".into()
}
fn default_knn_every() -> usize {
    1
}
fn default_knn_k() -> usize {
    200
}
fn default_knn_t() -> f64 {
    0.1
}
fn default_log_every() -> usize {
    10
}
fn default_true() -> bool {
    true
}
fn default_dist_timeout() -> u64 {
    900
}
