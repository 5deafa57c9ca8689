//! The arguments several commands share: which config and changes to it, and a weights file
//! from anywhere instead of a run.

use crate::config::Config;
use crate::config::valid::WIDTH;
use crate::model::{Arch, Stem};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Changes to a config on the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Overrides {
    /// Override a config value, e.g. `--set optim.epochs=100 --set data.root=/data/cifar`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shorthand for `--set data.root=PATH`.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl Overrides {
    /// The `key.path=value` assignments, `--data` included.
    pub fn list(&self) -> Vec<String> {
        let mut overrides = self.set.clone();
        if let Some(root) = &self.data {
            overrides.push(format!("data.root={:?}", root.display().to_string()));
        }
        overrides
    }
}

/// Which configuration: a preset or file, with overrides.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A preset (quick, cifar10, cifar10-cpu, imagenet, <method>-cifar10, <method>-imagenet) or a
    /// TOML file [default: quick].
    #[arg(long, short)]
    pub config: Option<String>,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ConfigArgs {
    /// The named config (or `fallback` when none is named) with the overrides applied.
    pub fn load(&self, fallback: &str) -> Result<Config> {
        Config::load(self.config.as_deref().unwrap_or(fallback), &self.overrides.list())
    }
}

/// A torchvision-layout encoder file and the ResNet it fits: the alternative to `-k RUN`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WeightsArgs {
    /// Use an encoder under torchvision's names instead of a run (.safetensors, .pth, .pt,
    /// .pth.tar); images are prepared as the --config's dataset says (--help for details).
    ///
    /// The file holds a torchvision ResNet's state dict, bare or under `state_dict` / `model`,
    /// with `module.` and `backbone.` prefixes dropped and `fc` ignored: the official Barlow
    /// Twins resnet50.pth and checkpoint.pth both work. A pickle that would run code under
    /// torch.load is refused. Images go through the --config dataset's evaluation view at
    /// data.size (quick: 32×32; imagenet: shorter side to 256, centre 224×224; change it with
    /// --set data.size=N), normalised with that dataset's mean and std (ImageNet's for image
    /// folders).
    #[arg(long, value_name = "FILE", requires = "arch", conflicts_with = "checkpoint")]
    pub weights: Option<PathBuf>,
    /// The file's ResNet.
    #[arg(long, requires = "weights", value_parser = ["resnet18", "resnet34", "resnet50"])]
    pub arch: Option<String>,
    /// The file's stem: imagenet (torchvision's 7×7 convolution and max-pool), cifar (3×3, no
    /// max-pool) or cifar-pad2 (solo-learn's: the 3×3 padded by 2) [default: imagenet].
    #[arg(long, requires = "weights", value_parser = ["imagenet", "cifar", "cifar-pad2"])]
    pub stem: Option<String>,
    /// The file's first-stage channels [default: 64, torchvision's].
    #[arg(long, requires = "weights", value_parser = WIDTH.parser::<usize>())]
    pub width: Option<usize>,
    /// With --weights: the dataset and evaluation settings, a preset or TOML file [default: quick,
    /// the embedded Fashion-MNIST sample]. -k uses the run's own.
    #[arg(long, short = 'c', requires = "weights")]
    pub config: Option<String>,
}

impl WeightsArgs {
    /// The `--config` (with `overrides`) describing the file's encoder, or `None` without --weights.
    pub fn config(&self, overrides: &[String]) -> Result<Option<(PathBuf, Config)>> {
        let Some(file) = &self.weights else { return Ok(None) };
        let mut config = Config::load(self.config.as_deref().unwrap_or("quick"), overrides)?;
        let arch = self.arch.as_deref().context("--weights needs --arch")?;
        config.model.arch = arch.parse::<Arch>().map_err(anyhow::Error::msg)?;
        config.model.stem = self.stem.as_deref().unwrap_or("imagenet").parse::<Stem>().map_err(|e| anyhow::anyhow!("--stem: {e}"))?;
        config.model.width = self.width.unwrap_or(64);
        config.model.init = None;
        Ok(Some((file.clone(), config)))
    }
}
