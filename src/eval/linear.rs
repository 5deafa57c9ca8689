//! Linear probe: a softmax classifier on frozen features, trained as the official evaluate.py
//! (SGD, momentum 0.9, weight decay 1e-6, cosine schedule), and label subsets for 1% / 10%.

use super::Accuracy;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::seq::SliceRandom;

#[derive(Config, Debug)]
pub struct ProbeConfig {
    #[config(default = 100)]
    pub epochs: usize,
    #[config(default = 256)]
    pub batch_size: usize,
    /// The classifier's learning rate (evaluate.py: 0.3 for batch 256).
    #[config(default = 0.3)]
    pub lr: f64,
    #[config(default = 1e-6)]
    pub weight_decay: f64,
    #[config(default = 0)]
    pub seed: u64,
}

/// A linear classifier being trained on features.
pub struct LinearProbe {
    pub head: Linear,
    optim: ModuleOptimizer,
    config: ProbeConfig,
    device: Device,
}

impl LinearProbe {
    /// A fresh [`head`] on `device` (an autodiff device).
    pub fn new(dim: usize, classes: usize, config: ProbeConfig, device: &Device) -> LinearProbe {
        let (head, optim) = (head(dim, classes, device), sgd(config.weight_decay));
        LinearProbe { head, optim, config, device: device.clone() }
    }

    /// One pass over `features` (`N×F`, any device) in a seeded order, with the cosine-scheduled
    /// learning rate of `epoch`. Returns the mean cross-entropy.
    pub fn fit_epoch(&mut self, features: &Tensor<2>, labels: &[u32], epoch: usize) -> f64 {
        let c = &self.config;
        let n = labels.len();
        // Its own stream, apart from the loader's epoch order: the recorded probe figures keep it.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut crate::data::loader::sample_rng(c.seed, epoch as u64, u64::MAX - 1));
        let loss_fn = CrossEntropyLossConfig::new().init(&self.device);
        let steps = n.div_ceil(c.batch_size);
        // Summed on the device and read once: a read per batch would wait for the device each time.
        let mut total: Option<Tensor<1>> = None;
        // The order and its labels go to the devices once per epoch, not once per batch: a copy
        // from host memory waits for a GPU's queue on LibTorch.
        let idx: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        let order_t = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &features.device());
        let y: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
        let y_t = label_tensor(&y, &self.device);
        for s in 0..steps {
            let lr = c.lr * cosine(epoch * steps + s, c.epochs * steps);
            let batch = s * c.batch_size..((s + 1) * c.batch_size).min(n);
            let x = features.clone().select(0, order_t.clone().slice(batch.clone())).to_device(&self.device);
            let y = y_t.clone().slice(batch);
            let loss = loss_fn.forward(self.head.forward(x), y);
            let detached = loss.clone().detach();
            total = Some(match total {
                Some(sum) => sum + detached,
                None => detached,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &self.head);
            self.head = self.optim.step(lr, self.head.clone(), grads);
        }
        total.map_or(0.0, |sum| sum.into_scalar::<f32>() as f64) / steps as f64
    }

    /// Top-1 / top-5 of the head on `features`.
    pub fn accuracy(&self, features: &Tensor<2>, labels: &[u32]) -> Accuracy {
        let head = self.head.valid();
        let logits = head.forward(features.clone().to_device(&head.weight.val().device()));
        topk_accuracy(logits, labels)
    }
}

/// A linear classifier initialised as evaluate.py's: weights N(0, 0.01²), zero bias.
pub(super) fn head(dim: usize, classes: usize, device: &Device) -> Linear {
    let mut head = LinearConfig::new(dim, classes).init(device);
    head.weight = Param::from_tensor(Tensor::random([dim, classes], Distribution::Normal(0.0, 0.01), device));
    head.bias = Some(Param::from_tensor(Tensor::zeros([classes], device)));
    head
}

/// evaluate.py's optimiser: SGD with momentum 0.9 (PyTorch's: no dampening) and weight decay.
pub(super) fn sgd(weight_decay: f64) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)))
        .with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)))
        .init()
}

/// The cosine schedule's factor at `step` of `total`: 1 at the start, 0 at the end.
pub(super) fn cosine(step: usize, total: usize) -> f64 {
    0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos())
}

/// Class indices as the `Int` targets of the cross-entropy.
pub(super) fn label_tensor(labels: &[u32], device: &Device) -> Tensor<1, Int> {
    let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(y, [labels.len()]), device)
}

/// Percentages of rows whose label is the largest logit, or among the five largest.
pub fn topk_accuracy(logits: Tensor<2>, labels: &[u32]) -> Accuracy {
    let [n, classes] = logits.dims();
    let values: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in values.chunks_exact(classes).zip(labels) {
        let own = row[label as usize];
        // Rank = how many classes score higher (ties count against the label).
        let rank = row.iter().enumerate().filter(|&(c, &v)| v > own || (v == own && c < label as usize)).count();
        top1 += (rank == 0) as usize;
        top5 += (rank < 5) as usize;
    }
    let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    Accuracy { top1: pct(top1), top5: pct(top5) }
}

/// Trains a probe for `config.epochs` on fixed features and reports its test accuracy.
pub fn linear_probe(
    train: &Tensor<2>,
    train_labels: &[u32],
    test: &Tensor<2>,
    test_labels: &[u32],
    classes: usize,
    config: ProbeConfig,
    device: &Device,
) -> Accuracy {
    let [_, dim] = train.dims();
    let epochs = config.epochs;
    let mut probe = LinearProbe::new(dim, classes, config, device);
    for epoch in 0..epochs {
        probe.fit_epoch(train, train_labels, epoch);
    }
    probe.accuracy(test, test_labels)
}

/// A class-balanced `fraction` of the indices (at least one per class), fixed by `seed`, for
/// semi-supervised evaluation with 1% or 10% of the labels.
pub fn label_subset(labels: &[u32], fraction: f64, seed: u64) -> Vec<usize> {
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut chosen = vec![];
    for c in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize == c).collect();
        members.shuffle(&mut crate::data::loader::sample_rng(seed, c as u64, 0));
        let keep = ((members.len() as f64 * fraction).round() as usize).clamp(1.min(members.len()), members.len());
        chosen.extend_from_slice(&members[..keep]);
    }
    chosen.sort_unstable();
    chosen
}
