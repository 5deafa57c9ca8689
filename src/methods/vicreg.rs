//! VICReg (Bardes, Ponce & LeCun, ICLR 2022): invariance between the views, a hinge keeping each
//! dimension's standard deviation up, and decorrelated dimensions — Barlow Twins' closest
//! sibling, with the three terms apart. Reference: facebookresearch/vicreg `main_vicreg.py`.

use crate::loss::{Loss, diagonal};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// ε under the square root of the variance hinge.
pub const EPS: f64 = 1e-4;

/// The coefficients λ (invariance), μ (variance) and ν (covariance); the paper's are 25, 25, 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { invariance: 25.0, variance: 25.0, covariance: 1.0 }
    }
}

/// The expander of the paper: 8192-8192-8192.
pub const EXPANDER: [usize; 3] = [8192, 8192, 8192];

/// The VICReg loss of two expander outputs `z_a`, `z_b` (`N×D`):
///
/// ```text
/// s(Z, Z')  = 1/(N·D) Σ ‖z_i − z'_i‖²                         (invariance: F.mse_loss)
/// v(Z)      = 1/D Σ_j max(0, 1 − √(Var(z^j) + ε))              (Var unbiased)
/// c(Z)      = 1/D Σ_{i≠j} C(Z)_ij²,  C(Z) = (Z−Z̄)ᵀ(Z−Z̄)/(N−1)
/// L = λ·s + μ·(v(Z) + v(Z'))/2 + ν·(c(Z) + c(Z'))
/// ```
///
/// Logged terms are s, (v(Z)+v(Z'))/2 and c(Z)+c(Z'), before their coefficients.
pub fn vicreg_loss(z_a: Tensor<2>, z_b: Tensor<2>, w: Weights) -> Loss {
    let [n, d] = z_a.dims();
    let invariance = (z_a.clone() - z_b.clone()).square().mean();
    let centre = |z: Tensor<2>| z.clone() - z.mean_dim(0);
    let (z_a, z_b) = (centre(z_a), centre(z_b));
    let variance_of = |z: &Tensor<2>| {
        let var = z.clone().square().sum_dim(0).div_scalar((n - 1) as f64);
        relu(var.add_scalar(EPS).sqrt().neg().add_scalar(1.0)).mean()
    };
    let variance = (variance_of(&z_a) + variance_of(&z_b)).div_scalar(2.0);
    let covariance_of = |z: Tensor<2>| {
        let c = z.clone().transpose().matmul(z).div_scalar((n - 1) as f64);
        // Σ_{i≠j} C_ij² = Σ C² − Σ diag(C)², without a masked copy of C.
        (c.clone().square().sum() - diagonal(c).square().sum()).div_scalar(d as f64)
    };
    let covariance = covariance_of(z_a) + covariance_of(z_b);
    let total = invariance.clone().mul_scalar(w.invariance)
        + variance.clone().mul_scalar(w.variance)
        + covariance.clone().mul_scalar(w.covariance);
    Loss { total, terms: vec![("invariance", invariance), ("variance", variance), ("covariance", covariance)] }
}
