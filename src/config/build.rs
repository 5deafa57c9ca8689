//! What a run configuration builds: the model, the optimiser and the learning-rate schedule.

use super::{Config, Optimizer};
use crate::methods::MethodConfig;
use crate::model::ResNetConfig;
use crate::optim::{Fixed, LarsConfig, Schedule, SgdConfig};
use burn::module::ParamGroup;
use burn::optim::ModuleOptimizer;

impl Config {
    /// The model this config describes.
    pub fn model(&self) -> MethodConfig {
        let m = &self.model;
        let encoder = ResNetConfig::new(m.arch).with_stem(m.stem).with_width(m.width).with_zero_init_residual(m.zero_init_residual);
        MethodConfig { encoder, projector: m.projector.clone(), settings: m.settings.clone() }
    }

    pub fn lars(&self) -> LarsConfig {
        let o = &self.optim;
        LarsConfig::new()
            .with_lr_weights(o.lr_weights)
            .with_lr_biases(o.lr_biases.unwrap_or(o.lr_weights))
            .with_weight_decay(o.weight_decay)
            .with_momentum(o.momentum)
            .with_eta(o.eta)
            .with_trust_ratio(o.trust_ratio)
            .with_clip_lr(o.clip_lr)
    }

    pub fn sgd(&self) -> SgdConfig {
        let o = &self.optim;
        SgdConfig::new()
            .with_lr_weights(o.lr_weights)
            .with_lr_biases(o.lr_biases.unwrap_or(o.lr_weights))
            .with_weight_decay(o.weight_decay)
            .with_exclude_bias_and_norm(o.exclude_bias_and_norm == Some(true))
            .with_momentum(o.momentum)
    }

    /// The learning-rate schedule for epochs of `steps_per_epoch` steps.
    pub fn schedule(&self, steps_per_epoch: usize) -> Schedule {
        let o = &self.optim;
        let schedule = Schedule::new(o.batch_size, o.epochs, o.warmup_epochs, steps_per_epoch).with_scaling(o.lr_scaling, o.batch_size);
        let peak = o.peak_lr();
        let (start, end) = (o.warmup_start_lr.map(|r| r / peak), o.min_lr.map_or(schedule.end_fraction, |r| r / peak));
        schedule.with_ends(start, end)
    }

    /// The optimiser, its `step` taking `schedule`'s factor; with `optim.fix_predictor_lr` the
    /// predictor stays at the schedule's batch-size factor, without warm-up or decay.
    pub fn optimizer(&self, schedule: &Schedule) -> ModuleOptimizer {
        let predictor = || ParamGroup::from_predicate("predictor");
        let fixed = self.optim.fix_predictor_lr;
        match self.optim.optimizer {
            Optimizer::Lars if fixed => self.lars().init().with_group(predictor(), Fixed { inner: self.lars().build(), factor: schedule.base }, None),
            Optimizer::Lars => self.lars().init(),
            Optimizer::Sgd if fixed => self.sgd().init().with_group(predictor(), Fixed { inner: self.sgd().build(), factor: schedule.base }, None),
            Optimizer::Sgd => self.sgd().init(),
        }
    }
}
