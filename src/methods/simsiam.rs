//! SimSiam (Chen & He, CVPR 2021): one network predicts its own projection of the other view;
//! the stop-gradient alone prevents collapse. References: facebookresearch/simsiam; solo-learn
//! `simsiam.py`.

use crate::loss::cosine;
use burn::tensor::Tensor;

/// The paper's predictor: a 512-wide bottleneck (back to the projector's width).
pub const PREDICTOR_HIDDEN: usize = 512;

/// The symmetrised negative cosine of the predictions `p_a`, `p_b` and the projections `z_a`,
/// `z_b` of the two views (`N×D`), with the stop-gradient on the projections:
///
/// ```text
/// D(p, z) = −cos(p, stopgrad(z)),   averaged over the batch
/// L = D(p_a, z_b)/2 + D(p_b, z_a)/2
/// ```
pub fn simsiam_loss(p_a: Tensor<2>, p_b: Tensor<2>, z_a: Tensor<2>, z_b: Tensor<2>) -> Tensor<1> {
    let d = |p, z: Tensor<2>| -cosine(p, z.detach()).mean();
    (d(p_a, z_b) + d(p_b, z_a)).div_scalar(2.0)
}
