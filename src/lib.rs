//! Self-supervised representation learning: Barlow Twins, and beside it SimCLR, MoCo v2, BYOL,
//! SimSiam, VICReg and DINO on the same trainer.

pub mod backend;
pub mod cli;
pub mod compare;
pub mod collective;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod files;
#[cfg(feature = "cubecl")]
pub mod gpu;
pub mod loss;
pub mod memory;
pub mod methods;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod store;
pub mod train;
