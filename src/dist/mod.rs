//! Data-parallel training: one process per device, each on its shard of every global batch,
//! computing exactly what one process holding the whole batch would. The processes talk through
//! [`crate::collective`]; one process is the W = 1 case of the same step.

pub mod job;
pub mod step;

pub use job::{Job, conclude};
pub use step::{Arithmetic, train_step};
