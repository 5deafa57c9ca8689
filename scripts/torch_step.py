#!/usr/bin/env python3
"""PyTorch's time for the step `barlow bench step` measures: ResNet-18 (CIFAR stem) + projector,
two views of N images, the official loss, backward, and the official LARS update.

Run from the repository root:  .venv-ref/bin/python scripts/torch_step.py [--steps 3]
"""
import argparse
import time

import torch
import torch.nn as nn
import torchvision


class LARS(torch.optim.Optimizer):
    # The official Barlow Twins LARS (exclude_bias_and_norm: ndim == 1).
    def __init__(self, params, lr, weight_decay=0, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim != 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0,
                                    torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


class BarlowTwins(nn.Module):
    def __init__(self, sizes, lambd=0.0051):
        super().__init__()
        self.backbone = torchvision.models.resnet18(zero_init_residual=True)
        self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.backbone.maxpool = nn.Identity()
        self.backbone.fc = nn.Identity()
        sizes = [512] + sizes
        layers = []
        for i in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.projector = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)
        self.lambd = lambd

    def forward(self, y1, y2):
        z1, z2 = self.projector(self.backbone(y1)), self.projector(self.backbone(y2))
        c = self.bn(z1).T @ self.bn(z2) / y1.shape[0]
        on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambd * off_diag


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--projector", default="2048-2048-2048")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = BarlowTwins([int(s) for s in args.projector.split("-")])
    weights = [p for p in model.parameters() if p.ndim != 1]
    biases = [p for p in model.parameters() if p.ndim == 1]
    opt = LARS([{"params": weights, "lr": 0.02}, {"params": biases, "lr": 0.00048}], lr=0, weight_decay=1.5e-6)
    times = []
    for i in range(args.warmup + args.steps):
        y1 = torch.randn(args.batch, 3, args.size, args.size)
        y2 = torch.randn(args.batch, 3, args.size, args.size)
        start = time.perf_counter()
        loss = model(y1, y2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    print(f"   pytorch: {mean:.3f} s/step  {args.batch / mean:.1f} images/s  "
          f"(N={args.batch}, {args.size}×{args.size}, {len(times)} timed steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
