//! Encoder weights from outside a barlow run.

pub mod pickle;
