//! Elementwise passes of a training step on every core (burn's CPU backend runs them on the
//! calling thread alone while the others wait).

use rayon::prelude::*;

/// Values per task at least: large enough that scheduling costs nothing.
const CHUNK: usize = 1 << 14;

/// `relu(a + b)`.
pub fn add_relu(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = Vec::with_capacity(a.len());
    a.par_iter().zip(b).with_min_len(CHUNK).map(|(a, b)| (a + b).max(0.0)).collect_into_vec(&mut y);
    y
}

/// `grad` where `output > 0`, else 0.
pub fn relu_grad(output: &[f32], grad: &[f32]) -> Vec<f32> {
    let mut dx = Vec::with_capacity(grad.len());
    output.par_iter().zip(grad).with_min_len(CHUNK).map(|(y, g)| if *y > 0.0 { *g } else { 0.0 }).collect_into_vec(&mut dx);
    dx
}
