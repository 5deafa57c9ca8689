//! Fine-tuning: encoder and a linear head trained together on labeled, cropped and flipped
//! images, with separate learning rates (evaluate.py's `--weights finetune`).

use super::Accuracy;
use super::features;
use super::linear::{cosine, head, label_tensor, sgd, topk_accuracy};
use crate::data::{self, Dataset, Views};
use crate::model::ResNet;
use anyhow::Result;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr_head: f64,
    pub lr_backbone: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

/// Trains `encoder` (on an autodiff `device`) and a fresh head on `train`, then reports the
/// accuracy on `test` in eval mode.
pub fn finetune(
    mut encoder: ResNet,
    train: &Dataset,
    test: &Dataset,
    views: &Views,
    config: &FinetuneConfig,
    device: &Device,
) -> Result<Accuracy> {
    let classes = train.num_classes();
    let dim = encoder.forward(Tensor::zeros([2, 3, views.size, views.size], device)).dims()[1];
    let mut head = head(dim, classes, device);
    let (mut optim_head, mut optim_backbone) = (sgd(config.weight_decay), sgd(config.weight_decay));
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let steps = train.len().div_ceil(config.batch_size);
    for epoch in 0..config.epochs {
        // Shuffled, so that a class-sorted folder does not give single-class batches.
        let order = data::loader::epoch_order(train.len(), config.seed, epoch);
        let shuffled = train.subset(&order);
        // The epoch's labels go to the device once and the loss is summed there, read once: on
        // tch-cuda a copy from host memory or a read per batch would wait for the GPU each time.
        let labels = label_tensor(shuffled.labels().expect("labels"), device);
        let mut total: Option<Tensor<1>> = None;
        for (s, batch) in data::crop_flip_batches(&shuffled, views, config.batch_size, config.seed, epoch).enumerate() {
            let batch = batch?;
            let cosine = cosine(epoch * steps + s, config.epochs * steps);
            let first = s * config.batch_size;
            let y = labels.clone().slice(first..first + batch.shape[0]);
            let x = crate::ops::upload(batch.images, batch.shape, device);
            let loss = loss_fn.forward(head.forward(encoder.forward(x)), y);
            let detached = loss.clone().detach();
            total = Some(match total {
                Some(sum) => sum + detached,
                None => detached,
            });
            let mut grads = loss.backward();
            let g_head = GradientsParams::from_module(&mut grads, &head);
            let g_backbone = GradientsParams::from_module(&mut grads, &encoder);
            head = optim_head.step(config.lr_head * cosine, head, g_head);
            encoder = optim_backbone.step(config.lr_backbone * cosine, encoder, g_backbone);
        }
        let total = total.map_or(0.0, |sum| sum.into_scalar::<f32>() as f64);
        eprintln!("fine-tuning epoch {}/{}: loss {:.4}", epoch + 1, config.epochs, total / steps as f64);
    }
    let (encoder, head) = (encoder.valid(), head.valid());
    let eval_device = encoder.devices().into_iter().next().expect("a device");
    let batch = features::batch_size(&eval_device, views.size);
    let logits = features::forward_batches(data::eval_batches(test, views, batch), &eval_device, |x| {
        head.forward(encoder.forward(x))
    })?;
    Ok(topk_accuracy(logits, test.labels().expect("a labeled test split")))
}
