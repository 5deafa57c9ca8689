//! A frozen encoder on a config's labeled splits: its features, and the linear probe on them.

use super::{Accuracy, ProbeConfig, linear_probe};
use super::features;
use crate::config::Config;
use crate::data::{self, Dataset, Views};
use crate::methods::Model;
use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor};

/// The labeled train and test splits of `config`'s dataset, or an error saying they are needed.
pub fn monitor(config: &Config) -> Result<data::Monitor> {
    data::open_monitor(&config.data)?.context("evaluation needs a dataset with labeled train and test splits")
}

/// The features of every image of `set` through its evaluation view, and their labels.
pub fn labeled_features(model: &Model, set: &Dataset, views: &Views, device: &Device) -> Result<(Tensor<2>, Vec<u32>)> {
    let labels = set.labels().with_context(|| format!("{} has no labels to evaluate with", set.name()))?.to_vec();
    eprintln!("encoding {} images of {}", set.len(), set.name());
    Ok((features::encode(model.backbone(), set, views, device)?, labels))
}

/// The linear probe of `model`'s frozen features (in eval mode, on `device`) over every label
/// of `config`'s train split, tested on its test split: `barlow eval linear` without options.
pub fn linear(model: &Model, config: &Config, probe: ProbeConfig, device: &Device) -> Result<Accuracy> {
    let m = monitor(config)?;
    let views = Views::new(&config.data.views, config.data.size, m.train.normalize())?;
    let (train, train_labels) = labeled_features(model, &m.train, &views, device)?;
    let (test, test_labels) = labeled_features(model, &m.test, &views, device)?;
    // The classifier's initial weights come from the device's generator.
    device.seed(probe.seed);
    let classes = m.train.num_classes();
    Ok(linear_probe(&train, &train_labels, &test, &test_labels, classes, probe, &device.clone().autodiff()))
}
