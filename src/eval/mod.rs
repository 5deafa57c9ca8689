//! Evaluation of the learned representation: kNN monitor (and the linear probe).

pub mod knn;

pub use knn::{Accuracy, knn_accuracy};
