//! Pretraining: the step, the loop with checkpoints and monitoring, and its metrics log.

pub mod lock;
pub mod metrics;
pub mod plots;
pub mod previous;
pub mod report;
pub mod run;
pub mod step;

pub use lock::RunLock;
pub use run::{Summary, train, train_in};
pub use step::{Progress, StepStats};

use std::path::{Path, PathBuf};

/// The checkpoint file inside a run directory.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.bin")
}
