//! Frozen encoder features of a whole dataset, in order, without augmentation.

use crate::data::{self, Dataset, Views};
use crate::methods::Model;
use crate::model::ResNet;
use anyhow::Result;
use burn::tensor::{Device, Tensor};

/// Images per forward pass when encoding on `device`: a GPU is kept busy by large batches of
/// small images, which a CPU gains nothing from (and the figures recorded on CPUs used 256).
/// Large images come fewer at a time, at most 2^24 pixels a batch (one at 4096 px).
pub fn batch_size(device: &Device, image_size: usize) -> usize {
    let preferred = match crate::backend::is_cpu(device) || image_size > 64 {
        true => 256,
        false => 1024,
    };
    preferred.min((1 << 24) / (image_size * image_size).max(1)).max(1)
}

/// `N×F` features of every image of `dataset` through its evaluation view and `encoder` (which
/// should be in eval mode: `model.backbone.valid()`).
pub fn encode(encoder: &ResNet, dataset: &Dataset, views: &Views, device: &Device) -> Result<Tensor<2>> {
    encode_batches(encoder, data::eval_batches(dataset, views, batch_size(device, views.size)), device)
}

/// Features of randomly cropped and flipped images (the linear probe's `--augment`).
pub fn encode_crop_flip(
    encoder: &ResNet,
    dataset: &Dataset,
    views: &Views,
    seed: u64,
    epoch: usize,
    device: &Device,
) -> Result<Tensor<2>> {
    let batch = batch_size(device, views.size);
    encode_batches(encoder, data::crop_flip_batches(dataset, views, batch, seed, epoch), device)
}

/// Projector outputs (`N×D`) instead of the encoder's features.
pub fn project(model: &Model, dataset: &Dataset, views: &Views, device: &Device) -> Result<Tensor<2>> {
    forward_batches(data::eval_batches(dataset, views, batch_size(device, views.size)), device, |x| model.project(x))
}

fn encode_batches(
    encoder: &ResNet,
    batches: impl Iterator<Item = Result<data::EvalBatch>>,
    device: &Device,
) -> Result<Tensor<2>> {
    forward_batches(batches, device, |x| encoder.forward(x))
}

/// `forward` over every batch, the outputs stacked in order. Nothing is read back until the end:
/// the device computes one batch while the host prepares the next.
pub(crate) fn forward_batches(
    batches: impl Iterator<Item = Result<data::EvalBatch>>,
    device: &Device,
    forward: impl Fn(Tensor<4>) -> Tensor<2>,
) -> Result<Tensor<2>> {
    let mut parts = Vec::new();
    for batch in batches {
        let batch = batch?;
        let images = crate::ops::upload(batch.images, batch.shape, device);
        parts.push(forward(images));
        // Hand the queued work to the device now rather than when a queue fills up.
        device.flush()?;
    }
    Ok(Tensor::cat(parts, 0))
}
