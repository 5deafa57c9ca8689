//! Optimisation: LARS and SGD, and the learning-rate schedule.

pub mod lars;
pub mod schedule;
pub mod sgd;

pub use lars::{Lars, LarsConfig, LarsState, TrustRatio};
pub use schedule::{LrScaling, Schedule};
pub use sgd::{Fixed, Sgd, SgdConfig};
