//! MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv 2003.04297): queries from the encoder
//! against keys from its momentum copy, with a queue of past keys as the negatives (InfoNCE).
//! References: facebookresearch/moco `moco/builder.py`; solo-learn `mocov2plus.py` (the
//! symmetric loss with one queue per view).

use crate::loss::{logsumexp, normalize};
use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Distribution, Tensor};

/// MoCo v2's temperature.
pub const TEMPERATURE: f64 = 0.2;
/// MoCo's queue: 65,536 keys.
pub const QUEUE: usize = 65_536;
/// MoCo v2's constant momentum m = 0.999 (solo-learn's CIFAR recipe: 0.99 → 0.999).
pub const EMA: [f64; 2] = [0.999, 0.999];

/// The queue of past keys, one per view when the loss is symmetric (`views × K × D`, rows of
/// unit length): the negatives of the next steps. It takes no gradient.
#[derive(Module, Debug)]
pub struct Queue {
    pub keys: Param<Tensor<3>>,
}

impl Queue {
    /// Random unit keys, as MoCo starts (`normalize(randn(dim, K))`).
    pub fn new(views: usize, size: usize, dim: usize, device: &Device) -> Queue {
        let keys = Tensor::<3>::random([views, size, dim], Distribution::Normal(0.0, 1.0), device);
        let keys = normalize(keys.reshape([views * size, dim])).reshape([views, size, dim]);
        Queue { keys: Param::initialized(ParamId::new(), keys.set_require_grad(false)).set_require_grad(false) }
    }

    /// The negatives for view `v`'s keys (`K×D`).
    pub fn negatives(&self, v: usize) -> Tensor<2> {
        let [_, k, d] = self.keys.dims();
        self.keys.val().narrow(0, v, 1).reshape([k, d]).detach()
    }

    /// The queue after step `step` (0-based) enqueued its `keys` (`views × N × D`).
    pub fn push(self, keys: Tensor<3>, step: usize) -> Queue {
        Queue { keys: self.keys.map(|queue| enqueue(queue, keys.detach(), step)) }
    }
}

/// The queue after step `step` wrote its N keys over the oldest ones: at `ptr = step·N mod K`,
/// where MoCo's `queue_ptr` stands after `step` steps of N keys (K is a multiple of N).
pub fn enqueue(queue: Tensor<3>, keys: Tensor<3>, step: usize) -> Tensor<3> {
    let [views, size, dim] = queue.dims();
    let [_, n, _] = keys.dims();
    let ptr = step * n % size;
    queue.slice_assign([0..views, ptr..ptr + n, 0..dim], keys)
}

/// MoCo's InfoNCE of queries `q` against their keys `k` (`N×D`) and the queue's negatives
/// (`K×D`), all of unit length:
///
/// ```text
/// ℓ_i = −log( exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_j exp(q_i·n_j/τ)) ),   L = mean_i ℓ_i
/// ```
///
/// (`CrossEntropyLoss` of the logits `[l_pos, l_neg]/τ` against label 0, as `builder.py`).
pub fn infonce(q: Tensor<2>, k: Tensor<2>, negatives: Tensor<2>, temperature: f64) -> Tensor<1> {
    let positive = q.clone().mul(k.detach()).sum_dim(1);
    let negative = q.matmul(negatives.detach().transpose());
    let logits = Tensor::cat(vec![positive.clone(), negative], 1).div_scalar(temperature);
    (logsumexp(logits) - positive.div_scalar(temperature)).mean()
}

/// The MoCo v2 loss of the two views' queries (`q_a`, `q_b`) and keys (`k_a`, `k_b`), all
/// normalised. Asymmetric (the paper): `q_a` against `k_b`, the queue holding past `k_b`s.
/// Symmetric (solo-learn): the mean of that and `q_b` against `k_a`, each against the queue of
/// its key's view. Returns the loss and the keys to enqueue (`views × N × D`).
pub fn moco_loss(
    q_a: Tensor<2>,
    q_b: Option<Tensor<2>>,
    k_a: Option<Tensor<2>>,
    k_b: Tensor<2>,
    queue: &Queue,
    temperature: f64,
) -> (Tensor<1>, Tensor<3>) {
    match (q_b, k_a) {
        (Some(q_b), Some(k_a)) => {
            let loss = infonce(q_a, k_b.clone(), queue.negatives(1), temperature)
                + infonce(q_b, k_a.clone(), queue.negatives(0), temperature);
            (loss.div_scalar(2.0), Tensor::stack(vec![k_a, k_b], 0))
        }
        _ => (infonce(q_a, k_b.clone(), queue.negatives(0), temperature), k_b.unsqueeze()),
    }
}
