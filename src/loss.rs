//! The Barlow Twins objective: make the cross-correlation of two views' embeddings the identity.

use burn::tensor::{Device, Int, Tensor};

/// λ from the paper: the weight of the redundancy-reduction (off-diagonal) term.
pub const LAMBDA: f64 = 0.0051;

/// PyTorch's BatchNorm epsilon, used by the official code's `nn.BatchNorm1d(affine=False)`.
pub const BN_EPS: f64 = 1e-5;

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

/// Standardises each dimension over the batch: BatchNorm with `affine=false` in training mode
/// (biased variance, ε = 1e-5), as the official code applies to `z` before the correlation.
pub fn standardize(z: Tensor<2>) -> Tensor<2> {
    let (var, mean) = z.clone().var_mean_bias(0);
    (z - mean).div((var + BN_EPS).sqrt())
}

/// Cross-correlation C = ẑ_Aᵀ ẑ_B / N of two standardised `N×D` embeddings (`D×D`).
///
/// `n` is the batch size the sum is divided by: the global batch when C is later summed over
/// workers, the local one otherwise.
pub fn cross_correlation(z_a: Tensor<2>, z_b: Tensor<2>, n: usize) -> Tensor<2> {
    z_a.transpose().matmul(z_b).div_scalar(n as f64)
}

/// The Barlow Twins loss of a cross-correlation matrix `c` (`D×D`).
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

/// The main diagonal of a square matrix, as a vector, by a strided gather of D elements.
fn diagonal(c: Tensor<2>) -> Tensor<1> {
    let [d, _] = c.dims();
    let device: Device = c.device();
    let idx = Tensor::<1, Int>::arange_step(0..(d * d) as i64, d + 1, &device);
    c.reshape([d * d]).select(0, idx)
}
