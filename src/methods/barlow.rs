//! Barlow Twins (Zbontar et al., ICML 2021): make the cross-correlation of two views' embeddings
//! the identity. Reference: facebookresearch/barlowtwins `main.py`.

use crate::loss::{Loss, diagonal, standardize};
use burn::tensor::Tensor;

/// λ from the paper: the weight of the redundancy-reduction (off-diagonal) term.
pub const LAMBDA: f64 = 0.0051;

/// The loss and its two terms, kept apart so that they can be logged.
#[derive(Clone, Debug)]
pub struct BarlowLoss {
    /// `on_diag + λ · off_diag`.
    pub total: Tensor<1>,
    /// Invariance term: Σ_i (1 − C_ii)².
    pub on_diag: Tensor<1>,
    /// Redundancy-reduction term, before λ: Σ_{i≠j} C_ij².
    pub off_diag: Tensor<1>,
}

impl From<BarlowLoss> for Loss {
    fn from(l: BarlowLoss) -> Loss {
        Loss { total: l.total, terms: vec![("on_diag", l.on_diag), ("off_diag", l.off_diag)] }
    }
}

/// Cross-correlation C = ẑ_Aᵀ ẑ_B / N of two standardised `N×D` embeddings (`D×D`).
///
/// `n` is the batch size the sum is divided by: the global batch when C is later summed over
/// workers, the local one otherwise.
pub fn cross_correlation(z_a: Tensor<2>, z_b: Tensor<2>, n: usize) -> Tensor<2> {
    // 1/N scales an N×D operand rather than the D×D product: two passes over C fewer (one
    // forward, one backward; 268 MB each at D = 8192), and the same bits when N is a power of two.
    z_a.transpose().matmul(z_b.div_scalar(n as f64))
}

/// The Barlow Twins loss of a cross-correlation matrix `c` (`D×D`):
///
/// ```text
/// L = Σ_i (1 − C_ii)²  +  λ Σ_{i≠j} C_ij²
/// ```
///
/// The off-diagonal sum is Σ C² − Σ diag(C)², so no masked copy of C is ever built.
pub fn barlow_loss_from_c(c: Tensor<2>, lambda: f64) -> BarlowLoss {
    let [d, d2] = c.dims();
    assert_eq!(d, d2, "cross-correlation must be square, got {d}×{d2}");
    let diag = diagonal(c.clone());
    let on_diag = (diag.clone() - 1.0).square().sum();
    let off_diag = c.square().sum() - diag.square().sum();
    let total = on_diag.clone() + off_diag.clone().mul_scalar(lambda);
    BarlowLoss { total, on_diag, off_diag }
}

/// The Barlow Twins loss of two projector outputs `z_a`, `z_b` (`N×D`), on one worker.
pub fn barlow_loss(z_a: Tensor<2>, z_b: Tensor<2>, lambda: f64) -> BarlowLoss {
    let [n, _] = z_a.dims();
    let c = cross_correlation(standardize(z_a), standardize(z_b), n);
    barlow_loss_from_c(c, lambda)
}
