//! Frozen encoder features of a whole dataset, in order, without augmentation.

use crate::data::{self, Dataset, Views};
use crate::model::ResNet;
use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};

/// Images per forward pass when encoding.
const BATCH: usize = 256;

/// `N×F` features of every image of `dataset` through its evaluation view and `encoder` (which
/// should be in eval mode: `model.backbone.valid()`).
pub fn encode(encoder: &ResNet, dataset: &Dataset, views: &Views, device: &Device) -> Result<Tensor<2>> {
    let mut parts = Vec::new();
    for batch in data::eval_batches(dataset, views, BATCH) {
        let batch = batch?;
        let images = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        parts.push(encoder.forward(images));
    }
    Ok(Tensor::cat(parts, 0))
}
