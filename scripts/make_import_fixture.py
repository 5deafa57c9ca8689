#!/usr/bin/env python3
"""A PyTorch `.pth` checkpoint of a narrow torchvision-layout ResNet-18, for the import test.

Run from the repository root:  .venv-ref/bin/python scripts/make_import_fixture.py
Writes tests/fixtures/import_r18_w4.pth (as the official Barlow Twins training checkpoint
stores it: under a `model` entry, with `module.backbone.` prefixes, the fc layer and BatchNorm
counters) and tests/fixtures/import_r18_w4.safetensors (the same encoder tensors under plain
torchvision names: what barlow must end up with).
"""
import os

import torch
import torchvision
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
WIDTH = 4  # channels of the first stage (torchvision: 64)

torch.manual_seed(0)
full = torchvision.models.resnet18().state_dict()
encoder = {}
for name, t in full.items():
    if name.startswith("fc."):
        continue
    if name.endswith("num_batches_tracked"):
        continue
    # Scale every channel count by WIDTH / 64, keeping the 3 input channels of conv1.
    shape = [s if (i == 1 and name == "conv1.weight") or i >= 2 else s * WIDTH // 64 for i, s in enumerate(t.shape)]
    if name == "conv1.weight":
        shape = [WIDTH, 3, 3, 3]  # the CIFAR stem
    if name.endswith("running_var"):
        encoder[name] = torch.rand(shape) + 0.5
    else:
        encoder[name] = torch.randn(shape) * 0.1
save_file(encoder, os.path.join(OUT, "import_r18_w4.safetensors"))

wrapped = {f"module.backbone.{k}": v for k, v in encoder.items()}
for k in list(encoder):
    if k.endswith("running_mean"):
        wrapped[f"module.backbone.{k[: -len('running_mean')]}num_batches_tracked"] = torch.tensor(7)
wrapped["module.backbone.fc.weight"] = torch.randn(10, 8 * WIDTH)
wrapped["module.backbone.fc.bias"] = torch.zeros(10)
torch.save({"epoch": 3, "model": wrapped}, os.path.join(OUT, "import_r18_w4.pth"))
print("wrote", OUT)
