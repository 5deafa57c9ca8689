//! Frozen encoder features of a whole dataset, in order, without augmentation.

use crate::data::{self, Dataset, Views};
use crate::model::{BarlowTwins, ResNet};
use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};

/// Images per forward pass when encoding.
const BATCH: usize = 256;

/// `N×F` features of every image of `dataset` through its evaluation view and `encoder` (which
/// should be in eval mode: `model.backbone.valid()`).
pub fn encode(encoder: &ResNet, dataset: &Dataset, views: &Views, device: &Device) -> Result<Tensor<2>> {
    encode_batches(encoder, data::eval_batches(dataset, views, BATCH), device)
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
    encode_batches(encoder, data::crop_flip_batches(dataset, views, BATCH, seed, epoch), device)
}

/// Projector outputs (`N×D`) instead of the encoder's features.
pub fn project(model: &BarlowTwins, dataset: &Dataset, views: &Views, device: &Device) -> Result<Tensor<2>> {
    forward_batches(data::eval_batches(dataset, views, BATCH), device, |x| model.project(x))
}

fn encode_batches(
    encoder: &ResNet,
    batches: impl Iterator<Item = Result<data::EvalBatch>>,
    device: &Device,
) -> Result<Tensor<2>> {
    forward_batches(batches, device, |x| encoder.forward(x))
}

/// `forward` over every batch, the outputs stacked in order.
pub(crate) fn forward_batches(
    batches: impl Iterator<Item = Result<data::EvalBatch>>,
    device: &Device,
    forward: impl Fn(Tensor<4>) -> Tensor<2>,
) -> Result<Tensor<2>> {
    let mut parts = Vec::new();
    for batch in batches {
        let batch = batch?;
        let images = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        parts.push(forward(images));
    }
    Ok(Tensor::cat(parts, 0))
}
