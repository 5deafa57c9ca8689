//! Encoder weights from outside a barlow run: `--weights FILE --arch ...` and `train --init FILE`.

pub mod pickle;

use crate::config::valid::WIDTH;
use crate::config::{Config, InitWeights};
use crate::methods::Model;
use crate::model::{Arch, Stem};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

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
    /// The file's stem: imagenet (torchvision's 7×7 convolution and max-pool) or cifar (3×3,
    /// no max-pool) [default: imagenet].
    #[arg(long, requires = "weights", value_parser = ["imagenet", "cifar"])]
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
        config.model.stem = match self.stem.as_deref().unwrap_or("imagenet") {
            "cifar" => Stem::Cifar,
            _ => Stem::Imagenet,
        };
        config.model.width = self.width.unwrap_or(64);
        config.model.init = None;
        Ok(Some((file.clone(), config)))
    }
}

/// A model whose encoder holds the weights of `file` and whose heads are fresh (the files
/// hold none that barlow reads), as `config.model` describes it.
/// `hint` says where the architecture was given, for the error when the file does not fit it.
pub fn model_from(file: &Path, config: &Config, device: &Device, hint: &str) -> Result<Model> {
    let model = config.model().init(device);
    let m = &config.model;
    let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let what = format!("a {} with the {} stem and width {}, as {hint} say", name(&m.arch), name(&m.stem), m.width);
    let backbone = crate::export::import_as(model.backbone.clone(), file, &what)?;
    Ok(model.with_backbone(backbone))
}

/// What `train --init FILE` records in the run's config: the absolute path and the SHA-256.
pub fn record_init(file: &Path) -> Result<InitWeights> {
    let path = std::fs::canonicalize(file).with_context(|| format!("--init {}: no such file", file.display()))?;
    let sha256 = crate::data::download::sha256(&path)?;
    Ok(InitWeights { path, sha256 })
}

/// The model a new run starts from: `config`'s, with the encoder of `model.init` when set, after
/// checking that the file is still the one the config recorded.
pub fn initial_model(config: &Config, device: &Device) -> Result<Model> {
    let Some(init) = &config.model.init else { return Ok(config.model().init(device)) };
    let actual = crate::data::download::sha256(&init.path)
        .context("reading model.init, the weights this config starts from")?;
    if actual != init.sha256 {
        bail!(
            "{}: the config's model.init recorded SHA-256 {}, the file now has {actual}; it changed since. \
             Start from it as it is now with --init {}, or restore the original",
            init.path.display(), init.sha256, init.path.display()
        );
    }
    let model = model_from(&init.path, config, device, "model.arch, model.stem and model.width")?;
    eprintln!("encoder initialised from {} (sha256 {}…); projector fresh", init.path.display(), &init.sha256[..12]);
    Ok(model)
}
