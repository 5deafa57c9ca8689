#!/usr/bin/env python3
"""Golden fixtures for barlow's tests, computed with PyTorch exactly as the official main.py does.

Run from the repository root:  .venv-ref/bin/python scripts/make_fixtures.py
Writes tests/fixtures/*.safetensors (small; committed).
"""
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
LAMBD = 0.0051


def off_diagonal(x):
    # The official helper: a flattened view of the off-diagonal elements of a square matrix.
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_loss(z1, z2, lambd):
    """The loss of the official BarlowTwins.forward, single process, from projector outputs."""
    bn = nn.BatchNorm1d(z1.shape[1], affine=False).double()
    c = bn(z1).T @ bn(z2)
    c.div_(z1.shape[0])
    c_saved = c.detach().clone()  # the official code squares C's diagonal in place below
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    return on_diag + lambd * off_diag, on_diag, off_diag, c_saved


def loss_fixture(name, n, d, seed, lambd=LAMBD, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    # Correlated views, like two distortions of one image, so that C has a real diagonal.
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    z_a = (base + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale + offset
    z_b = (base + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)) * scale - offset
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    loss, on_diag, off_diag, c = barlow_loss(z_a, z_b, lambd)
    loss.backward()
    f = lambda t: t.detach().float().contiguous()
    save_file(
        {
            "z_a": f(z_a),
            "z_b": f(z_b),
            "lambda": torch.tensor([lambd], dtype=torch.float32),
            "loss": f(loss.reshape(1)),
            "on_diag": f(on_diag.reshape(1)),
            "off_diag": f(off_diag.reshape(1)),
            "c": f(c),
            "grad_z_a": f(z_a.grad),
            "grad_z_b": f(z_b.grad),
        },
        os.path.join(OUT, f"loss_{name}.safetensors"),
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    loss_fixture("n8_d16", 8, 16, seed=1)  # N < D
    loss_fixture("n32_d8", 32, 8, seed=2)  # N > D
    loss_fixture("n64_d64", 64, 64, seed=3, scale=3.0, offset=2.0)  # N = D, off-centre data
    loss_fixture("n16_d128_l1", 16, 128, seed=4, lambd=1.0)  # another λ
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
