//! The learning-rate schedule of the official code: linear warm-up, then cosine to 0.001×; and
//! the ends solo-learn's and DINO's schedules give it (their warm-up start, their final rate).

use serde::{Deserialize, Serialize};

/// How the learning rate grows with the batch size (`optim.lr_scaling`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScaling {
    /// × batch/256: the linear scaling rule (Goyal et al.), as every method's paper uses it.
    #[default]
    Linear,
    /// × √(batch/256): SimCLR's alternative for small batches (its appendix B.1).
    Sqrt,
}

impl LrScaling {
    /// The factor at `batch_size`.
    pub fn factor(self, batch_size: usize) -> f64 {
        let ratio = batch_size as f64 / 256.0;
        match self {
            LrScaling::Linear => ratio,
            LrScaling::Sqrt => ratio.sqrt(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The batch-size factor: batch / 256 by the linear scaling rule.
    pub base: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// Final rate as a fraction of `base` (paper: 0.001).
    #[serde(default = "default_end")]
    pub end_fraction: f64,
    /// The warm-up's first rate as a fraction of `base`, the warm-up then reaching `base` at its
    /// last step (`np.linspace`, Lightning Bolts' `LinearWarmupCosineAnnealingLR`); without it the
    /// official code's `base · step / warmup_steps`.
    #[serde(default)]
    pub start_fraction: Option<f64>,
}

fn default_end() -> f64 {
    0.001
}

impl Schedule {
    /// The official schedule for `epochs` epochs of `steps_per_epoch`, `warmup_epochs` of warm-up.
    pub fn new(batch_size: usize, epochs: usize, warmup_epochs: usize, steps_per_epoch: usize) -> Self {
        Schedule {
            base: LrScaling::Linear.factor(batch_size),
            warmup_steps: warmup_epochs * steps_per_epoch,
            total_steps: epochs * steps_per_epoch,
            end_fraction: default_end(),
            start_fraction: None,
        }
    }

    /// The same schedule warming up from `start` and ending at `end` (fractions of `base`).
    pub fn with_ends(self, start: Option<f64>, end: f64) -> Self {
        Schedule { start_fraction: start, end_fraction: end, ..self }
    }

    /// The same schedule with the batch-size factor of another scaling rule.
    pub fn with_scaling(self, scaling: LrScaling, batch_size: usize) -> Self {
        Schedule { base: scaling.factor(batch_size), ..self }
    }

    /// The factor at `step` (0-based) that multiplies each group's base learning rate.
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return match self.start_fraction {
                None => self.base * step as f64 / self.warmup_steps as f64,
                Some(start) => {
                    let t = step as f64 / (self.warmup_steps - 1).max(1) as f64;
                    self.base * (start + (1.0 - start) * t)
                }
            };
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = (step - self.warmup_steps).min(span) as f64 / span as f64;
        let q = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        let end = self.base * self.end_fraction;
        self.base * q + end * (1.0 - q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_from_zero() {
        let s = Schedule::new(512, 100, 10, 50);
        assert_eq!(s.factor(0), 0.0);
        assert!((s.factor(250) - 1.0).abs() < 1e-12); // half of 500 warm-up steps of base 2
        assert!((s.factor(499) - 2.0 * 499.0 / 500.0).abs() < 1e-12);
    }

    /// Lightning Bolts' closed form, as solo-learn steps it: warm-up from 3e-5 to the peak over
    /// W − 1 steps, then η_min + ½(peak − η_min)(1 + cos(π(step − W)/(T − W))), η_min = 0.
    #[test]
    fn the_linspace_warm_up_and_a_final_rate_are_solo_learns() {
        let peak = 0.3;
        let s = Schedule::new(256, 20, 10, 10).with_ends(Some(3e-5 / peak), 0.0);
        let rate = |step| peak * s.factor(step);
        assert!((rate(0) - 3e-5).abs() < 1e-15);
        assert!((rate(50) - (3e-5 + 50.0 * (peak - 3e-5) / 99.0)).abs() < 1e-12);
        assert!((rate(99) - peak).abs() < 1e-12, "the peak at the last warm-up step");
        assert!((rate(100) - peak).abs() < 1e-12);
        assert!((rate(150) - 0.5 * peak * (1.0 + (std::f64::consts::PI * 0.5).cos())).abs() < 1e-12);
        assert!(rate(200).abs() < 1e-15, "down to η_min = 0");
        // The official warm-up is another line: it reaches the peak one step later.
        assert!((Schedule::new(256, 20, 10, 10).factor(99) * peak - peak * 0.99).abs() < 1e-12);
    }

    #[test]
    fn cosine_runs_from_base_to_a_thousandth() {
        let s = Schedule::new(256, 20, 10, 10);
        assert!((s.factor(100) - 1.0).abs() < 1e-12);
        // Half-way through the cosine: the mean of base and end.
        assert!((s.factor(150) - (1.0 + 0.001) / 2.0).abs() < 1e-12);
        assert!((s.factor(200) - 0.001).abs() < 1e-12);
        assert!((s.factor(10_000) - 0.001).abs() < 1e-12);
    }
}
