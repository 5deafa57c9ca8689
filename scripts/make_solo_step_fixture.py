#!/usr/bin/env python3
"""Golden fixture of the first step's loss under solo-learn's Barlow Twins recipe
(scripts/pretrain/cifar/barlow.yaml: scale_loss 0.1, lamb 0.0051), computed in float64 as
solo-learn computes it: its CIFAR stem (conv1 3x3 stride 1 *padding 2*, no max-pool, from
solo/methods/base.py), its projector (Linear with biases, BN, ReLU, twice, then Linear with a
bias) and solo/losses/barlow.py's barlow_loss_func.

Run from the repository root:  .venv-ref/bin/python scripts/make_solo_step_fixture.py
Writes tests/fixtures/step_solo_r18_w4.safetensors: `x1`, `x2`, the backbone under torchvision's
names, the projector under nn.Sequential's (`projector.0.weight`, `projector.0.bias`, ...), and
`loss` (the scaled loss solo-learn logs as train_barlow_loss), `loss_unscaled`, and the backbone's
gradient `grad.conv1.weight`.
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_step_fixture import narrow_resnet18  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "step_solo_r18_w4.safetensors")
WIDTH, SIZES, N, PIXELS, LAMB, SCALE_LOSS = 4, [32, 32, 16], 8, 16, 0.0051, 0.1


def barlow_loss_func(z1, z2, lamb, scale_loss):
    """solo-learn's, on one process."""
    n, d = z1.size()
    bn = nn.BatchNorm1d(d, affine=False).to(z1.device).double()
    z1, z2 = bn(z1), bn(z2)
    corr = torch.einsum("bi, bj -> ij", z1, z2) / n
    diag = torch.eye(d, device=corr.device, dtype=corr.dtype)
    cdif = (corr - diag).pow(2)
    cdif[~diag.bool()] *= lamb
    return scale_loss * cdif.sum()


def main():
    torch.manual_seed(1)
    backbone = narrow_resnet18(WIDTH, padding=2)
    sizes = [WIDTH * 8] + SIZES
    projector = nn.Sequential(
        nn.Linear(sizes[0], sizes[1]), nn.BatchNorm1d(sizes[1]), nn.ReLU(),
        nn.Linear(sizes[1], sizes[2]), nn.BatchNorm1d(sizes[2]), nn.ReLU(),
        nn.Linear(sizes[2], sizes[3]),
    )
    model = nn.ModuleDict({"backbone": backbone, "projector": projector}).double().train()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())
    x1 = torch.randn(N, 3, PIXELS, PIXELS, dtype=torch.float64).float().double()
    x2 = (x1 + 0.5 * torch.randn_like(x1)).flip(-1).float().double()
    out = {"x1": x1.float().contiguous(), "x2": x2.float().contiguous()}
    out.update({k: v.float().contiguous() for k, v in backbone.state_dict().items() if "num_batches" not in k})
    out.update({f"projector.{k}": v.float().contiguous() for k, v in projector.state_dict().items() if "num_batches" not in k})
    z1, z2 = projector(backbone(x1)), projector(backbone(x2))
    loss = barlow_loss_func(z1, z2, LAMB, SCALE_LOSS)
    loss.backward()
    out["loss"] = loss.detach().float().reshape(1)
    out["loss_unscaled"] = (loss.detach() / SCALE_LOSS).float().reshape(1)
    out["grad.conv1.weight"] = backbone.conv1.weight.grad.float().contiguous()
    save_file(out, OUT)
    print("wrote", OUT, "loss", loss.item())


if __name__ == "__main__":
    main()
