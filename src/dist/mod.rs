//! Data-parallel training: one process per device, each on its shard of every global batch,
//! computing exactly what one process holding the whole batch would. The processes talk through
//! [`crate::collective`].

pub mod job;
pub mod loss;
pub mod step;

pub use job::{Job, conclude};
pub use step::Parallel;
