//! Evaluation of the learned representation: the weighted kNN monitor and the linear probe.

pub mod knn;
pub mod linear;

pub use knn::{Accuracy, knn_accuracy};
pub use linear::{LinearProbe, ProbeConfig, label_subset, linear_probe};
