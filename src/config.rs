//! Run configuration: TOML presets embedded in the binary, files, and `--set key=value` overrides.

use crate::methods::{self, MethodConfig, Method, Objective};
use crate::model::{Arch, ResNetConfig, Stem};
use crate::optim::{Fixed, LarsConfig, LrScaling, Schedule, SgdConfig};
use anyhow::{Context, Result, bail};
use burn::module::ParamGroup;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The presets under `configs/`, compiled in so that `--config NAME` works from anywhere.
/// `<method>-cifar10` and `<method>-imagenet` are each method's recipes (Barlow Twins' are
/// `cifar10` and `imagenet`, also under `barlow-...`).
pub const PRESETS: [(&str, &str); 16] = [
    ("quick", include_str!("../configs/quick.toml")),
    ("cifar10", include_str!("../configs/cifar10.toml")),
    ("cifar10-cpu", include_str!("../configs/cifar10-cpu.toml")),
    ("imagenet", include_str!("../configs/imagenet.toml")),
    ("barlow-cifar10", include_str!("../configs/cifar10.toml")),
    ("barlow-imagenet", include_str!("../configs/imagenet.toml")),
    ("simclr-cifar10", include_str!("../configs/simclr-cifar10.toml")),
    ("simclr-imagenet", include_str!("../configs/simclr-imagenet.toml")),
    ("moco-cifar10", include_str!("../configs/moco-cifar10.toml")),
    ("moco-imagenet", include_str!("../configs/moco-imagenet.toml")),
    ("byol-cifar10", include_str!("../configs/byol-cifar10.toml")),
    ("byol-imagenet", include_str!("../configs/byol-imagenet.toml")),
    ("simsiam-cifar10", include_str!("../configs/simsiam-cifar10.toml")),
    ("simsiam-imagenet", include_str!("../configs/simsiam-imagenet.toml")),
    ("vicreg-cifar10", include_str!("../configs/vicreg-cifar10.toml")),
    ("vicreg-imagenet", include_str!("../configs/vicreg-imagenet.toml")),
];

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
    /// Side of the square crops.
    pub size: usize,
    /// Use only the first N training images (quick experiments).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Loader threads (0: all cores).
    #[serde(default)]
    pub workers: usize,
}

/// The encoder, and the method with its heads and settings. A method's settings that the file
/// leaves out get the method's paper values when the config is read; settings of other methods
/// are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// barlow (the default), simclr, moco, byol, simsiam or vicreg.
    #[serde(default)]
    pub method: Method,
    pub arch: Arch,
    pub stem: Stem,
    #[serde(default = "default_width")]
    pub width: usize,
    /// Projector widths (VICReg: the expander); the last is the embedding dimension D.
    pub projector: Vec<usize>,
    /// BYOL, SimSiam: predictor widths, the last being D again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<Vec<usize>>,
    /// Barlow Twins: the weight of the off-diagonal term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// SimCLR, MoCo: the softmax temperature τ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// MoCo: keys in the queue (per view when symmetric); a multiple of the batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// MoCo: the symmetric loss (both views as queries, one queue per view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// MoCo, BYOL: τ of the momentum network at the first step and at the last (cosine between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<[f64; 2]>,
    /// VICReg: the weights of the invariance, variance and covariance terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invariance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariance: Option<f64>,
    /// Encoder weights a new run starts from (`train --init`); resuming reads the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitWeights>,
}

/// A weights file and its SHA-256, so that a changed file is noticed rather than used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitWeights {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// lars (the default: the official code's) or sgd (PyTorch's, with momentum).
    #[serde(default)]
    pub optimizer: Optimizer,
    pub batch_size: usize,
    pub epochs: usize,
    pub warmup_epochs: usize,
    /// Learning rate of the weights per 256 images.
    pub lr_weights: f64,
    /// Learning rate of biases and BatchNorm parameters per 256 images [default: lr_weights].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_biases: Option<f64>,
    /// How the rates grow with the batch: linear (× batch/256) or sqrt (× √(batch/256)).
    #[serde(default)]
    pub lr_scaling: LrScaling,
    /// Keep the predictor at its initial learning rate (SimSiam's `--fix-pred-lr`).
    #[serde(default)]
    pub fix_predictor_lr: bool,
    pub weight_decay: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// LARS's trust coefficient η.
    #[serde(default = "default_eta")]
    pub eta: f64,
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
    #[serde(default = "default_knn_k")]
    pub knn_k: usize,
    #[serde(default = "default_knn_t")]
    pub knn_t: f64,
    /// The kNN monitor uses this many images of each labeled split (spread over it) [default: all].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_limit: Option<usize>,
    /// Stop after this many optimisation steps in this invocation (tests, smoke runs).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Read the loss back from the device every this many steps (and at each epoch's end), to
    /// log it and stop on a non-finite one; in between, the device is never waited for.
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

fn default_width() -> usize {
    64
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

impl Config {
    /// A preset by name, or a TOML file by path, with `key.path=value` overrides applied.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Config> {
        let table = Self::table(name_or_path)?;
        Self::from_table(table, overrides).with_context(|| format!("in config `{name_or_path}`"))
    }

    /// The TOML of a preset or file, unparsed.
    pub fn table(name_or_path: &str) -> Result<toml::Table> {
        let text = match PRESETS.iter().find(|(name, _)| *name == name_or_path) {
            Some((_, text)) => text.to_string(),
            None => std::fs::read_to_string(name_or_path).with_context(|| {
                let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                format!("config `{name_or_path}` is neither a preset ({}) nor a readable file", names.join(", "))
            })?,
        };
        toml::from_str(&text).with_context(|| format!("config `{name_or_path}` is not valid TOML"))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Config> {
        Self::from_table(toml::from_str(text)?, overrides)
    }

    /// The config of a TOML table, with overrides applied, the method's defaults filled in and
    /// everything checked.
    pub fn from_table(mut table: toml::Table, overrides: &[String]) -> Result<Config> {
        for o in overrides {
            set(&mut table, o)?;
        }
        let mut config: Config = table.try_into()?;
        config.model.resolve()?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config serialises")
    }

    fn validate(&self) -> Result<()> {
        let o = &self.optim;
        if o.batch_size < 2 {
            bail!("optim.batch_size must be at least 2: the loss standardises over the batch");
        }
        if o.epochs == 0 {
            bail!("optim.epochs must be positive");
        }
        if self.model.projector.is_empty() || self.model.width == 0 || self.data.size < 8 {
            bail!("model.projector needs a layer, model.width and data.size must be positive (size ≥ 8)");
        }
        if self.train.log_every == 0 {
            bail!("train.log_every must be at least 1");
        }
        let m = &self.model;
        if let Some(k) = m.queue
            && (k == 0 || k % o.batch_size != 0)
        {
            bail!(
                "model.queue = {k} is not a multiple of optim.batch_size = {}: MoCo replaces a whole batch of keys at \
                 a time (make the queue a multiple of every batch size you train with)",
                o.batch_size
            );
        }
        if o.fix_predictor_lr && m.predictor.is_none() {
            bail!("optim.fix_predictor_lr is set, but model.method = \"{}\" has no predictor", m.method);
        }
        Ok(())
    }

    /// The model this config describes.
    pub fn model(&self) -> MethodConfig {
        let m = &self.model;
        let encoder = ResNetConfig::new(m.arch).with_stem(m.stem).with_width(m.width);
        let given = |v: Option<f64>| v.expect("resolved at parse time");
        let objective = match m.method {
            Method::Barlow => Objective::Barlow { lambda: given(m.lambda) },
            Method::Simclr => Objective::Simclr { temperature: given(m.temperature) },
            Method::Moco => Objective::Moco { temperature: given(m.temperature), symmetric: m.symmetric == Some(true) },
            Method::Byol => Objective::Byol,
            Method::Simsiam => Objective::Simsiam,
            Method::Vicreg => Objective::Vicreg(methods::vicreg::Weights {
                invariance: given(m.invariance),
                variance: given(m.variance),
                covariance: given(m.covariance),
            }),
        };
        MethodConfig { encoder, projector: m.projector.clone(), predictor: m.predictor.clone(), objective, queue: m.queue, ema: m.ema }
    }

    pub fn lars(&self) -> LarsConfig {
        let o = &self.optim;
        LarsConfig::new()
            .with_lr_weights(o.lr_weights)
            .with_lr_biases(o.lr_biases.unwrap_or(o.lr_weights))
            .with_weight_decay(o.weight_decay)
            .with_momentum(o.momentum)
            .with_eta(o.eta)
    }

    pub fn sgd(&self) -> SgdConfig {
        let o = &self.optim;
        SgdConfig::new()
            .with_lr_weights(o.lr_weights)
            .with_lr_biases(o.lr_biases.unwrap_or(o.lr_weights))
            .with_weight_decay(o.weight_decay)
            .with_momentum(o.momentum)
    }

    /// The learning-rate schedule for epochs of `steps_per_epoch` steps.
    pub fn schedule(&self, steps_per_epoch: usize) -> Schedule {
        let o = &self.optim;
        Schedule::new(o.batch_size, o.epochs, o.warmup_epochs, steps_per_epoch).with_scaling(o.lr_scaling, o.batch_size)
    }

    /// The optimiser, its `step` taking `schedule`'s factor; with `optim.fix_predictor_lr` the
    /// predictor stays at the schedule's batch-size factor, without warm-up or decay.
    pub fn optimizer(&self, schedule: &Schedule) -> ModuleOptimizer {
        let predictor = || ParamGroup::from_predicate("predictor");
        let fixed = self.optim.fix_predictor_lr;
        match self.optim.optimizer {
            Optimizer::Lars if fixed => self.lars().init().with_group(predictor(), Fixed { inner: self.lars().build(), factor: schedule.base }, None),
            Optimizer::Lars => self.lars().init(),
            Optimizer::Sgd if fixed => self.sgd().init().with_group(predictor(), Fixed { inner: self.sgd().build(), factor: schedule.base }, None),
            Optimizer::Sgd => self.sgd().init(),
        }
    }
}

/// Applies one `a.b.c=value` override; the value is read as TOML (numbers, booleans, arrays),
/// or as a string when it is not valid TOML.
fn set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (path, raw) = assignment
        .split_once('=')
        .with_context(|| format!("override `{assignment}` is not of the form key.path=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().expect("split yields one key");
    let mut node = table;
    for key in parents {
        node = node
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("override `{assignment}`: `{key}` is not a section"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, _) in PRESETS {
            Config::load(name, &[]).unwrap();
        }
    }

    #[test]
    fn overrides_reach_nested_keys_with_types() {
        let c = Config::load("cifar10", &["optim.epochs=3".into(), "model.projector=[64, 32]".into(),
            "train.backend=flex".into()])
        .unwrap();
        assert_eq!(c.optim.epochs, 3);
        assert_eq!(c.model.projector, vec![64, 32]);
        assert_eq!(c.train.backend, "flex");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::load("quick", &["optim.epoch=3".into()]).is_err());
        assert!(Config::load("quick", &["optim.batch_size=1".into()]).is_err());
        assert!(Config::load("quick", &["epochs".into()]).is_err());
        let err = Config::load("no/such/file.toml", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("no/such/file.toml"));
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::load("imagenet", &[]).unwrap();
        assert_eq!(Config::parse(&c.to_toml(), &[]).unwrap(), c);
    }
}
