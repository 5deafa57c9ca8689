//! Pretraining: the step, the loop with checkpoints and monitoring, and its metrics log.

pub mod lock;
pub mod metrics;
pub mod previous;
pub mod plots;
pub mod run;
pub mod step;

pub use lock::RunLock;
pub use run::{Summary, checkpoint_path, train, train_in};
pub use step::{Progress, StepStats, train_step};
