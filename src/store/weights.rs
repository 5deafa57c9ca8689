//! Encoder weights from outside a barlow run: `--weights FILE --arch ...` and `train --init FILE`.

use crate::config::{Config, InitWeights};
use crate::methods::Model;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use std::path::Path;

/// A model whose encoder holds the weights of `file` and whose heads are fresh (the files
/// hold none that barlow reads), as `config.model` describes it.
/// `hint` says where the architecture was given, for the error when the file does not fit it.
pub fn model_from(file: &Path, config: &Config, device: &Device, hint: &str) -> Result<Model> {
    let model = config.model().init(device);
    let m = &config.model;
    let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let what = format!("a {} with the {} stem and width {}, as {hint} say", name(&m.arch), name(&m.stem), m.width);
    let backbone = crate::store::torchvision::import_as(model.backbone().clone(), file, &what)?;
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
