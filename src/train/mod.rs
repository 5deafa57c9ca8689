//! Pretraining: the step, and (later) the loop with checkpoints and monitoring.

pub mod step;

pub use step::{StepStats, train_step};
