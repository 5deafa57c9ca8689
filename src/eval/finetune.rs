//! Fine-tuning: encoder and a linear head trained together on labeled, cropped and flipped
//! images, with separate learning rates (evaluate.py's `--weights finetune`).

use super::{Accuracy, linear::topk_accuracy};
use crate::data::{self, Dataset, Views};
use crate::model::ResNet;
use anyhow::Result;
use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr_head: f64,
    pub lr_backbone: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

fn sgd(weight_decay: f64) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)))
        .with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)))
        .init()
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
    let mut head: Linear = LinearConfig::new(dim, classes).init(device);
    head.weight = Param::from_tensor(Tensor::random([dim, classes], Distribution::Normal(0.0, 0.01), device));
    head.bias = Some(Param::from_tensor(Tensor::zeros([classes], device)));
    let (mut optim_head, mut optim_backbone) = (sgd(config.weight_decay), sgd(config.weight_decay));
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let steps = train.len().div_ceil(config.batch_size);
    for epoch in 0..config.epochs {
        // Shuffled, so that a class-sorted folder does not give single-class batches.
        let order = data::loader::epoch_order(train.len(), config.seed, epoch);
        let shuffled = train.subset(&order);
        let mut total = 0.0;
        for (s, batch) in data::crop_flip_batches(&shuffled, views, config.batch_size, config.seed, epoch).enumerate() {
            let batch = batch?;
            let t = (epoch * steps + s) as f64 / (config.epochs * steps) as f64;
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
            let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
            let y: Vec<i64> = batch.labels.expect("labels").iter().map(|&l| l as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [y.len()]), device);
            let loss = loss_fn.forward(head.forward(encoder.forward(x)), y);
            total += loss.clone().into_scalar::<f32>() as f64;
            let mut grads = loss.backward();
            let g_head = GradientsParams::from_module(&mut grads, &head);
            let g_backbone = GradientsParams::from_module(&mut grads, &encoder);
            head = optim_head.step(config.lr_head * cosine, head, g_head);
            encoder = optim_backbone.step(config.lr_backbone * cosine, encoder, g_backbone);
        }
        eprintln!("fine-tuning epoch {}/{}: loss {:.4}", epoch + 1, config.epochs, total / steps as f64);
    }
    let (encoder, head) = (encoder.valid(), head.valid());
    let eval_device = encoder.devices().into_iter().next().expect("a device");
    let mut logits = vec![];
    for batch in data::eval_batches(test, views, 256) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &eval_device);
        logits.push(head.forward(encoder.forward(x)));
    }
    Ok(topk_accuracy(Tensor::cat(logits, 0), test.labels().expect("a labeled test split")))
}
