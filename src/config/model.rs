//! `[model]`: the encoder, the projector, and the method with its own settings, which the
//! method's file defines (`crate::methods`); a setting of another method is an error naming it.

use crate::methods::{Method, Settings};
use crate::model::{Arch, Stem};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The encoder, and the method with its heads and settings. A method's settings that the file
/// leaves out get the method's paper values when the config is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub struct ModelConfig {
    pub arch: Arch,
    pub stem: Stem,
    /// Channels of the first stage (64: torchvision's): 1 to 1024.
    pub width: usize,
    /// Projector widths (VICReg: the expander); the last is the embedding dimension D. One layer
    /// or more, each 1 to 32768 wide.
    pub projector: Vec<usize>,
    /// Encoder weights a new run starts from (`train --init`); resuming reads the checkpoint.
    pub init: Option<InitWeights>,
    /// Each residual branch's last BatchNorm starts at γ = 0 (torchvision's `zero_init_residual`,
    /// as the official Barlow Twins code builds its ResNet-50); false: γ = 1, torchvision's default.
    pub zero_init_residual: bool,
    /// The factor on the loss before backward, > 0 (1: the loss itself): solo-learn's
    /// `scale_loss`, the official Barlow Twins code's `--scale-loss`.
    pub scale_loss: f64,
    /// `model.method` (`crate::methods::Method`, Barlow Twins by default) and its own keys of
    /// `[model]`.
    pub settings: Settings,
}

/// A weights file and its SHA-256, so that a changed file is noticed rather than used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitWeights {
    pub path: PathBuf,
    pub sha256: String,
}

/// The keys of `[model]` that every method has.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    arch: Arch,
    stem: Stem,
    #[serde(default = "default_width")]
    width: usize,
    projector: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init: Option<InitWeights>,
    #[serde(default = "default_zero_init_residual")]
    zero_init_residual: bool,
    #[serde(default = "default_scale_loss")]
    scale_loss: f64,
}

const COMMON: [&str; 7] = ["arch", "stem", "width", "projector", "init", "zero_init_residual", "scale_loss"];

impl ModelConfig {
    pub fn method(&self) -> Method {
        self.settings.method()
    }

    fn from_table(mut table: toml::Table) -> Result<ModelConfig> {
        let method = match table.remove("method") {
            Some(v) => v.try_into::<Method>().map_err(|e| anyhow::anyhow!("model.method: {}", e.message()))?,
            None => Method::default(),
        };
        let (common, own): (toml::Table, toml::Table) = table.into_iter().partition(|(k, _)| COMMON.contains(&k.as_str()));
        if let Some(key) = own.keys().find(|k| !Method::ALL.iter().any(|m| m.keys().contains(k))) {
            bail!(
                "model.{key} is not a setting: [model] takes method, {}, and for model.method = \"{method}\": {}",
                COMMON.join(", "),
                method.keys().join(", ")
            );
        }
        let common: Common = toml::Value::Table(common).try_into().map_err(|e| anyhow::anyhow!("model: {e}"))?;
        let d = common.projector.last().copied().unwrap_or(0);
        let settings = method.settings(own, d)?;
        let Common { arch, stem, width, projector, init, zero_init_residual, scale_loss } = common;
        Ok(ModelConfig { arch, stem, width, projector, init, zero_init_residual, scale_loss, settings })
    }
}

impl TryFrom<toml::Table> for ModelConfig {
    type Error = String;
    fn try_from(table: toml::Table) -> Result<ModelConfig, String> {
        ModelConfig::from_table(table).map_err(|e| format!("{e:#}"))
    }
}

impl From<ModelConfig> for toml::Table {
    fn from(m: ModelConfig) -> toml::Table {
        let (zero_init_residual, scale_loss) = (m.zero_init_residual, m.scale_loss);
        let common = Common { arch: m.arch, stem: m.stem, width: m.width, projector: m.projector, init: m.init, zero_init_residual, scale_loss };
        let mut table = toml::Table::try_from(common).expect("[model] serialises");
        table.insert("method".into(), m.settings.method().name().into());
        table.extend(m.settings.to_table());
        table
    }
}

fn default_width() -> usize {
    64
}

fn default_zero_init_residual() -> bool {
    true
}

fn default_scale_loss() -> f64 {
    1.0
}
