//! Evaluation of the learned representation: frozen features, the weighted kNN monitor, the linear probe
//! and fine-tuning.

pub mod features;
pub mod finetune;
pub mod frozen;
pub mod knn;
pub mod linear;

pub use knn::{Accuracy, knn_accuracy};
pub use linear::{LinearProbe, ProbeConfig, label_subset, linear_probe};
