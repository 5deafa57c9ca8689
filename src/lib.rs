//! Barlow Twins: self-supervised representation learning by redundancy reduction.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod export;
pub mod features;
#[cfg(feature = "cubecl")]
pub mod gpu;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod train;
pub mod weights;
