//! Optimisation: LARS and its learning-rate schedule.

pub mod lars;
pub mod schedule;

pub use lars::{Lars, LarsConfig, LarsState};
pub use schedule::Schedule;
