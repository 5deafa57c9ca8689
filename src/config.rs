//! Run configuration: TOML presets embedded in the binary, files, and `--set key=value` overrides.

use crate::model::{Arch, BarlowTwinsConfig, ResNetConfig, Stem};
use crate::optim::LarsConfig;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The presets under `configs/`, compiled in so that `--config NAME` works from anywhere.
pub const PRESETS: [(&str, &str); 4] = [
    ("quick", include_str!("../configs/quick.toml")),
    ("cifar10", include_str!("../configs/cifar10.toml")),
    ("cifar10-cpu", include_str!("../configs/cifar10-cpu.toml")),
    ("imagenet", include_str!("../configs/imagenet.toml")),
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    pub stem: Stem,
    #[serde(default = "default_width")]
    pub width: usize,
    pub projector: Vec<usize>,
    #[serde(default = "default_lambda")]
    pub lambda: f64,
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
    pub batch_size: usize,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub lr_weights: f64,
    pub lr_biases: f64,
    pub weight_decay: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_eta")]
    pub eta: f64,
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
fn default_lambda() -> f64 {
    crate::loss::LAMBDA
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
        let text = match PRESETS.iter().find(|(name, _)| *name == name_or_path) {
            Some((_, text)) => text.to_string(),
            None => std::fs::read_to_string(name_or_path).with_context(|| {
                let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                format!("config `{name_or_path}` is neither a preset ({}) nor a readable file", names.join(", "))
            })?,
        };
        Self::parse(&text, overrides).with_context(|| format!("in config `{name_or_path}`"))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Config> {
        let mut value: toml::Table = toml::from_str(text)?;
        for o in overrides {
            set(&mut value, o)?;
        }
        let config: Config = value.try_into()?;
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
        Ok(())
    }

    pub fn model(&self) -> BarlowTwinsConfig {
        let m = &self.model;
        BarlowTwinsConfig::new(ResNetConfig::new(m.arch).with_stem(m.stem).with_width(m.width))
            .with_projector(m.projector.clone())
            .with_lambda(m.lambda)
    }

    pub fn lars(&self) -> LarsConfig {
        let o = &self.optim;
        LarsConfig::new()
            .with_lr_weights(o.lr_weights)
            .with_lr_biases(o.lr_biases)
            .with_weight_decay(o.weight_decay)
            .with_momentum(o.momentum)
            .with_eta(o.eta)
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
