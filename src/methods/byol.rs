//! BYOL (Grill et al., NeurIPS 2020): an online network with a predictor regresses a slowly
//! moving target network's projection of the other view; no negatives. References:
//! deepmind-research/byol; solo-learn `byol.py`.

use crate::loss::cosine;
use burn::tensor::Tensor;

/// The target's τ: from the paper's 0.996 (ImageNet) to 1 by a cosine over training.
pub const EMA: [f64; 2] = [0.996, 1.0];

/// The predictor's hidden width in the paper (4096; its output is the projector's 256).
pub const PREDICTOR_HIDDEN: usize = 4096;

/// The symmetrised loss of the online predictions `p_a`, `p_b` and the target projections
/// `t_a`, `t_b` of the two views (`N×D`; the targets carry no gradient):
///
/// ```text
/// L(p, t) = ‖p̄ − t̄‖² = 2 − 2·cos(p, t),   averaged over the batch
/// L_total = L(p_a, t_b) + L(p_b, t_a)
/// ```
pub fn byol_loss(p_a: Tensor<2>, p_b: Tensor<2>, t_a: Tensor<2>, t_b: Tensor<2>) -> Tensor<1> {
    let l = |p, t: Tensor<2>| (-cosine(p, t.detach()).mean()).mul_scalar(2.0).add_scalar(2.0);
    l(p_a, t_b) + l(p_b, t_a)
}
