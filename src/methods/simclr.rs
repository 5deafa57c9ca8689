//! SimCLR (Chen et al., ICML 2020): each view must pick out its partner among all 2N − 1 other
//! views of the batch (NT-Xent). Reference: google-research/simclr; solo-learn `simclr.py`.

use crate::loss::{logsumexp, normalize};
use burn::tensor::Tensor;

/// The paper's temperature for ImageNet (solo-learn's CIFAR recipe uses 0.2).
pub const TEMPERATURE: f64 = 0.1;

/// NT-Xent over the 2N views, `z_a`, `z_b` (`N×D`) being the projections of the two views:
///
/// ```text
/// s_ij = ẑ_i·ẑ_j / τ          (ẑ = z/‖z‖, i, j over all 2N views)
/// ℓ_i  = −log( exp(s_i,p(i)) / Σ_{k≠i} exp(s_ik) ),   p(i) the other view of i's image
/// L    = 1/(2N) Σ_i ℓ_i
/// ```
///
/// The 2N×2N similarity matrix is the only batch-wide quantity: a distributed version gathers
/// the embeddings of every worker into it.
pub fn nt_xent(z_a: Tensor<2>, z_b: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = z_a.dims();
    let (z_a, z_b) = (normalize(z_a), normalize(z_b));
    let positive = z_a.clone().mul(z_b.clone()).sum_dim(1).div_scalar(temperature);
    let z = Tensor::cat(vec![z_a, z_b], 0);
    let s = z.clone().matmul(z.transpose()).div_scalar(temperature);
    // k = i is left out of the sum by pushing s_ii far below every other logit (exp → 0).
    let device = s.device();
    let self_mask = Tensor::<2>::eye(2 * n, &device).cast(s.dtype()).mul_scalar(1e9);
    let all = logsumexp(s - self_mask);
    (all - Tensor::cat(vec![positive.clone(), positive], 0)).mean()
}
