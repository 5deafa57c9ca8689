//! What every method's objective is made of: the loss with its logged terms, and the batch
//! statistics and similarities the objectives share. Each objective lives with its method
//! (`crate::methods`).

use burn::tensor::{Device, Int, Tensor};

/// PyTorch's BatchNorm epsilon, used by the official code's `nn.BatchNorm1d(affine=False)`.
pub const BN_EPS: f64 = 1e-5;

/// PyTorch's `F.normalize` epsilon: a row's norm is taken as at least this.
pub const NORM_EPS: f64 = 1e-12;

/// A method's loss, and the terms it is made of (by name, unweighted), for the log.
#[derive(Clone, Debug)]
pub struct Loss {
    pub total: Tensor<1>,
    pub terms: Vec<(&'static str, Tensor<1>)>,
}

impl Loss {
    /// A loss that is logged as one number.
    pub fn single(total: Tensor<1>) -> Loss {
        Loss { total, terms: vec![] }
    }

    /// The loss and its terms times `factor` (the same loss where `factor` is 1).
    pub fn scaled(self, factor: f64) -> Loss {
        if factor == 1.0 {
            return self;
        }
        let terms = self.terms.into_iter().map(|(name, t)| (name, t.mul_scalar(factor))).collect();
        Loss { total: self.total.mul_scalar(factor), terms }
    }
}

/// Standardises each dimension over the batch: BatchNorm with `affine=false` in training mode
/// (biased variance, ε = 1e-5), as the official code applies to `z` before the correlation.
pub fn standardize(z: Tensor<2>) -> Tensor<2> {
    let (var, mean) = z.clone().var_mean_bias(0);
    (z - mean).div((var + BN_EPS).sqrt())
}

/// Each row scaled to unit length (`F.normalize(z, dim=1)`).
pub fn normalize(z: Tensor<2>) -> Tensor<2> {
    let norm = z.clone().square().sum_dim(1).sqrt().clamp_min(NORM_EPS);
    z.div(norm)
}

/// Row-wise cosine similarity of two `N×D` matrices (`N×1`).
pub fn cosine(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    normalize(a).mul(normalize(b)).sum_dim(1)
}

/// `log Σ_j exp(x_ij)` of each row (`N×1`), shifted by the row's maximum so that no exponential
/// overflows, whatever the temperature.
pub fn logsumexp(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}

/// The main diagonal of a square matrix, as a vector, by a strided gather of D elements.
pub fn diagonal(c: Tensor<2>) -> Tensor<1> {
    let [d, _] = c.dims();
    let device: Device = c.device();
    // The indices are made on the device: burn's `arange_step` builds them on the host, and
    // LibTorch's copy of host memory to a GPU waits for the GPU to finish all it was given.
    let idx = Tensor::<1, Int>::arange(0..d as i64, &device).mul_scalar(d as i64 + 1);
    c.reshape([d * d]).select(0, idx)
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
