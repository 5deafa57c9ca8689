#!/usr/bin/env python3
"""Golden fixture of one whole Barlow Twins training step, computed with PyTorch in float64.

Run from the repository root:  .venv-ref/bin/python scripts/make_step_fixture.py
Writes tests/fixtures/step_r18_w4.safetensors: a width-4 torchvision ResNet-18 with the CIFAR stem
(3x3 conv1, no max-pool, zero_init_residual=False so that every branch carries gradient) and the
official projector (Linear-BN-ReLU twice, then Linear, no biases), two views of 8 images of
16x16, and what the official BarlowTwins.forward gives on them in training mode: the loss, the
gradient of every parameter, and the BatchNorm running statistics after the step.

Keys: `x1`, `x2`; parameters under their torchvision / nn.Sequential names (`conv1.weight`,
`layer2.0.downsample.1.bias`, `projector.0.weight`, `projector.1.weight`, ...); `grad.<name>`;
`running.<bn>.running_mean|running_var`; `loss`. And, for `train.precision = "bf16"`, how far
PyTorch's own bfloat16 autocast lands from that float64 step: `bf16.loss` and `bf16.grad_error`
(the relative L2 error of all gradients together).
"""
import contextlib
import copy
import os

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "step_r18_w4.safetensors")
WIDTH, SIZES, N, PIXELS, LAMBD = 4, [32, 32, 16], 8, 16, 0.0051


def off_diagonal(x):
    n, m = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_step(model, x1, x2, autocast):
    """The official BarlowTwins.forward and backward on one process; products under `autocast`,
    the standardisation, C and the loss in the model's own precision."""
    backbone, projector, bn = model["backbone"], model["projector"], model["bn"]
    with autocast:
        z1 = projector(backbone(x1))
        z2 = projector(backbone(x2))
    z1, z2 = z1.to(x1.dtype), z2.to(x1.dtype)
    c = bn(z1).T @ bn(z2)
    c.div_(N)
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    loss = on_diag + LAMBD * off_diag
    loss.backward()
    return loss


def narrow_resnet18(width=WIDTH, padding=1):
    """torchvision's ResNet-18 with every stage narrowed to width·2^i channels (its own
    _make_layer builds the blocks once `inplanes` starts at `width`), the CIFAR stem (3x3 conv1
    padded by `padding`, no max-pool), no fc; BatchNorm away from 1 / 0 so that the gamma and beta
    paths are exercised."""
    narrow = torchvision.models.resnet.ResNet.__new__(torchvision.models.resnet.ResNet)
    nn.Module.__init__(narrow)
    narrow._norm_layer, narrow.inplanes, narrow.dilation, narrow.groups, narrow.base_width = nn.BatchNorm2d, width, 1, 1, 64
    narrow.conv1 = nn.Conv2d(3, width, 3, 1, padding, bias=False)
    narrow.bn1 = nn.BatchNorm2d(width)
    narrow.relu = nn.ReLU(inplace=True)
    narrow.maxpool = nn.Identity()
    block = torchvision.models.resnet.BasicBlock
    narrow.layer1 = narrow._make_layer(block, width, 2)
    narrow.layer2 = narrow._make_layer(block, width * 2, 2, stride=2)
    narrow.layer3 = narrow._make_layer(block, width * 4, 2, stride=2)
    narrow.layer4 = narrow._make_layer(block, width * 8, 2, stride=2)
    narrow.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    narrow.fc = nn.Identity()
    for m in narrow.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return narrow


def main():
    torch.manual_seed(0)
    backbone = narrow_resnet18()
    sizes = [WIDTH * 8] + SIZES
    layers = []
    for i in range(len(sizes) - 2):
        layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    projector = nn.Sequential(*layers)
    bn = nn.BatchNorm1d(sizes[-1], affine=False)
    model = nn.ModuleDict({"backbone": backbone, "projector": projector, "bn": bn}).double().train()

    x1 = torch.randn(N, 3, PIXELS, PIXELS, dtype=torch.float64)
    x2 = (x1 + 0.5 * torch.randn_like(x1)).flip(-1)
    params = {f"{k}": v.detach().float().clone() for k, v in backbone.state_dict().items() if "num_batches" not in k}
    params.update({f"projector.{k}": v.detach().float().clone() for k, v in projector.state_dict().items() if "num_batches" not in k})

    # The step runs in float64 from the float32-rounded weights and inputs that barlow reads.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.float().double())
    x1, x2 = x1.float().double(), x2.float().double()
    f32_model = copy.deepcopy(model).float()
    loss = barlow_step(model, x1, x2, contextlib.nullcontext())
    bf16_loss = barlow_step(f32_model, x1.float(), x2.float(), torch.autocast("cpu", dtype=torch.bfloat16))
    pairs = [(a.grad.double(), b.grad) for a, b in zip(f32_model.parameters(), model.parameters())]
    grad_error = (sum((a - b).pow(2).sum() for a, b in pairs) / sum(b.pow(2).sum() for _, b in pairs)).sqrt()

    out = {"x1": x1.float().contiguous(), "x2": x2.float().contiguous(), "loss": loss.detach().float().reshape(1)}
    out["bf16.loss"] = torch.tensor([bf16_loss.item()], dtype=torch.float32)
    out["bf16.grad_error"] = torch.tensor([grad_error.item()], dtype=torch.float32)
    out.update({k: v.contiguous() for k, v in params.items()})
    for name, p in backbone.named_parameters():
        out[f"grad.{name}"] = p.grad.float().contiguous()
    for name, p in projector.named_parameters():
        out[f"grad.projector.{name}"] = p.grad.float().contiguous()
    for prefix, module in [("", backbone), ("projector.", projector)]:
        for name, m in module.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                out[f"running.{prefix}{name}.running_mean"] = m.running_mean.float().contiguous()
                out[f"running.{prefix}{name}.running_var"] = m.running_var.float().contiguous()
    save_file(out, OUT)
    print("wrote", OUT, "loss", loss.item(), "bf16 autocast: loss", bf16_loss.item(), "gradient error", grad_error.item())


if __name__ == "__main__":
    main()
