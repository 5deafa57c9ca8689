#!/usr/bin/env python3
"""Golden fixtures for the methods beside Barlow Twins, computed with PyTorch in float64 as each
method's reference code computes its loss and state updates.

Run from the repository root:  .venv-ref/bin/python scripts/make_method_fixtures.py
Writes tests/fixtures/method_*.safetensors (small; committed):

- method_simclr_<case>: z_a, z_b, temperature -> loss, grad_z_a, grad_z_b (NT-Xent over 2N,
  as solo-learn's simclr_loss_func: exp-similarities, positives over everything but self).
- method_moco_<case>: q_a, q_b, k_a, k_b (raw projections), queue (views x K x D, unit rows),
  temperature -> loss (asymmetric: builder.py's logits and CrossEntropyLoss; symmetric:
  solo-learn's mocov2plus), grad_q_a, grad_q_b.
- method_byol_<case>: p_a, p_b, t_a, t_b -> loss, grad_p_a, grad_p_b (solo-learn's
  byol_loss_func, 2 - 2 cos, summed over both directions).
- method_simsiam_<case>: p_a, p_b, z_a, z_b -> loss, grad_p_a, grad_p_b, grad_z_a, grad_z_b
  (zero: the stop-gradient).
- method_vicreg_<case>: z_a, z_b, weights -> loss, invariance, variance, covariance, grads
  (the official main_vicreg.py VICReg.forward).
- method_state: the EMA step (solo-learn's MomentumUpdater.update and update_tau) and MoCo's
  _dequeue_and_enqueue over several steps, wrapping around the queue.
"""
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
f32 = lambda t: t.detach().float().contiguous()
scalar = lambda v: torch.tensor([float(v)], dtype=torch.float32)


def views(g, n, d, scale=1.0, offset=0.0, noise=0.5):
    """Two correlated embeddings, like two distortions of the same images, as leaves."""
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    a = (base + noise * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale + offset
    b = (base + noise * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale - offset
    # Rounded to float32 first: the Rust side reads float32.
    return a.float().double().requires_grad_(True), b.float().double().requires_grad_(True)


def simclr_loss(z, indexes, temperature):
    """solo-learn's simclr_loss_func on one process."""
    z = F.normalize(z, dim=-1)
    sim = torch.exp(torch.einsum("if, jf -> ij", z, z) / temperature)
    indexes = indexes.unsqueeze(0)
    pos_mask = indexes.t() == indexes
    pos_mask.fill_diagonal_(0)
    neg_mask = indexes.t() != indexes
    pos = torch.sum(sim * pos_mask, 1)
    neg = torch.sum(sim * neg_mask, 1)
    return -(torch.mean(torch.log(pos / (pos + neg))))


def simclr_fixture(name, n, d, temperature, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    z_a, z_b = views(g, n, d, **kw)
    indexes = torch.arange(n).repeat(2)
    loss = simclr_loss(torch.cat([z_a, z_b]), indexes, temperature)
    loss.backward()
    save_file({"z_a": f32(z_a), "z_b": f32(z_b), "temperature": scalar(temperature), "loss": f32(loss.reshape(1)),
               "grad_z_a": f32(z_a.grad), "grad_z_b": f32(z_b.grad)}, os.path.join(OUT, f"method_simclr_{name}.safetensors"))


def moco_nce(q, k, queue, temperature):
    """builder.py's logits and loss: l_pos, l_neg against the queue (D x K), CrossEntropyLoss."""
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue])
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels)


def moco_fixture(name, n, d, k_size, temperature, symmetric, seed):
    g = torch.Generator().manual_seed(seed)
    q_a, k_b = views(g, n, d)
    q_b, k_a = views(g, n, d)
    # solo-learn's queue: (views, D, K), normalised along D. Stored here as views x K x D.
    queue = F.normalize(torch.randn(2 if symmetric else 1, d, k_size, generator=g, dtype=torch.float64), dim=1)
    queue = queue.float().double()
    qa, qb = F.normalize(q_a, dim=-1), F.normalize(q_b, dim=-1)
    ka, kb = F.normalize(k_a, dim=-1).detach(), F.normalize(k_b, dim=-1).detach()
    if symmetric:
        # mocov2plus: q1 against k2 and the queue of view-2 keys, q2 against k1 and view 1's.
        loss = (moco_nce(qa, kb, queue[1], temperature) + moco_nce(qb, ka, queue[0], temperature)) / 2
    else:
        loss = moco_nce(qa, kb, queue[0], temperature)
    loss.backward()
    out = {"q_a": f32(q_a), "q_b": f32(q_b), "k_a": f32(k_a), "k_b": f32(k_b),
           "queue": f32(queue.transpose(1, 2)), "temperature": scalar(temperature),
           "symmetric": scalar(1.0 if symmetric else 0.0), "loss": f32(loss.reshape(1)),
           "grad_q_a": f32(q_a.grad)}
    out["grad_q_b"] = f32(q_b.grad) if q_b.grad is not None else torch.zeros(n, d)
    save_file(out, os.path.join(OUT, f"method_moco_{name}.safetensors"))


def byol_fixture(name, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    p_a, t_b = views(g, n, d)
    p_b, t_a = views(g, n, d)

    def byol_loss_func(p, z):
        return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()

    loss = byol_loss_func(p_a, t_b) + byol_loss_func(p_b, t_a)
    loss.backward()
    save_file({"p_a": f32(p_a), "p_b": f32(p_b), "t_a": f32(t_a), "t_b": f32(t_b), "loss": f32(loss.reshape(1)),
               "grad_p_a": f32(p_a.grad), "grad_p_b": f32(p_b.grad)}, os.path.join(OUT, f"method_byol_{name}.safetensors"))


def simsiam_fixture(name, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    p_a, z_b = views(g, n, d)
    p_b, z_a = views(g, n, d)

    def simsiam_loss_func(p, z):
        return -F.cosine_similarity(p, z.detach(), dim=-1).mean()

    loss = simsiam_loss_func(p_a, z_b) / 2 + simsiam_loss_func(p_b, z_a) / 2
    loss.backward()
    zero = lambda t: torch.zeros_like(t) if t.grad is None else t.grad
    save_file({"p_a": f32(p_a), "p_b": f32(p_b), "z_a": f32(z_a), "z_b": f32(z_b), "loss": f32(loss.reshape(1)),
               "grad_p_a": f32(p_a.grad), "grad_p_b": f32(p_b.grad), "grad_z_a": f32(zero(z_a)),
               "grad_z_b": f32(zero(z_b))}, os.path.join(OUT, f"method_simsiam_{name}.safetensors"))


def off_diagonal(x):
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_fixture(name, n, d, seed, weights=(25.0, 25.0, 1.0), **kw):
    g = torch.Generator().manual_seed(seed)
    z_a, z_b = views(g, n, d, **kw)
    sim, std, cov = weights
    # VICReg.forward of main_vicreg.py, on one process (batch_size = n).
    x, y = z_a, z_b
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (n - 1)
    cov_y = (y.T @ y) / (n - 1)
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(d) + off_diagonal(cov_y).pow_(2).sum().div(d)
    loss = sim * repr_loss + std * std_loss + cov * cov_loss
    loss.backward()
    save_file({"z_a": f32(z_a), "z_b": f32(z_b), "weights": torch.tensor(weights, dtype=torch.float32),
               "loss": f32(loss.reshape(1)), "invariance": f32(repr_loss.reshape(1)),
               "variance": f32(std_loss.reshape(1)), "covariance": f32(cov_loss.reshape(1)),
               "grad_z_a": f32(z_a.grad), "grad_z_b": f32(z_b.grad)}, os.path.join(OUT, f"method_vicreg_{name}.safetensors"))


def state_fixture():
    g = torch.Generator().manual_seed(11)
    out = {}
    # solo-learn's MomentumUpdater: tau after each step, and one update of a parameter.
    base, final, max_steps = 0.99, 1.0, 100
    taus = []
    for cur_step in [0, 1, 25, 50, 99, 100]:
        taus.append(final - (final - base) * (math.cos(math.pi * cur_step / max_steps) + 1) / 2)
    out["tau_steps"] = torch.tensor([0, 1, 25, 50, 99, 100], dtype=torch.float32)
    out["tau_values"] = torch.tensor(taus, dtype=torch.float64).float()
    online = torch.randn(7, 5, generator=g).float()
    target = torch.randn(7, 5, generator=g).float()
    tau = 0.996
    out["ema_online"], out["ema_target"], out["ema_tau"] = online, target, scalar(tau)
    out["ema_result"] = (tau * target + (1 - tau) * online).float()  # float32, as PyTorch runs it
    # MoCo's _dequeue_and_enqueue (builder.py): K = 6, N = 2, five steps (the pointer wraps).
    k_size, n, d = 6, 2, 3
    queue = F.normalize(torch.randn(d, k_size, generator=g), dim=0)
    out["queue_start"] = queue.t().contiguous().unsqueeze(0)
    ptr = 0
    keys_all = []
    for _ in range(5):
        keys = F.normalize(torch.randn(n, d, generator=g), dim=1)
        keys_all.append(keys)
        queue[:, ptr:ptr + n] = keys.T
        ptr = (ptr + n) % k_size
    out["queue_keys"] = torch.stack(keys_all).contiguous()  # steps x N x D
    out["queue_end"] = queue.t().contiguous().unsqueeze(0)
    save_file(out, os.path.join(OUT, "method_state.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    simclr_fixture("n8_d16", 8, 16, 0.2, seed=21)
    simclr_fixture("n32_d8", 32, 8, 0.1, seed=22, scale=3.0, offset=1.0)
    moco_fixture("n8_d16_asym", 8, 16, 32, 0.2, symmetric=False, seed=31)
    moco_fixture("n16_d8_sym", 16, 8, 64, 0.07, symmetric=True, seed=32)
    byol_fixture("n8_d16", 8, 16, seed=41)
    byol_fixture("n32_d4", 32, 4, seed=42)
    simsiam_fixture("n8_d16", 8, 16, seed=51)
    simsiam_fixture("n32_d4", 32, 4, seed=52)
    vicreg_fixture("n8_d16", 8, 16, seed=61)
    # Small spread (so that the variance hinge is active on some dimensions) and other weights.
    vicreg_fixture("n32_d8_w", 32, 8, seed=62, weights=(5.0, 10.0, 2.0), scale=0.4, offset=0.5)
    state_fixture()
    print("wrote", sorted(f for f in os.listdir(OUT) if f.startswith("method_")))


if __name__ == "__main__":
    main()
