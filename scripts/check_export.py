#!/usr/bin/env python3
"""Checks a barlow encoder export against torchvision: strict load, then the same features.

Usage: python scripts/check_export.py ENCODER.safetensors PROBE.safetensors ARCH STEM
PROBE holds `input` (N×3×H×W) and `features` (barlow's eval-mode output for it).
Prints the max abs difference; exits non-zero if loading fails or it exceeds 1e-4 (relative).
"""
import sys

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file


def main():
    weights, probe, arch, stem = sys.argv[1:5]
    net = getattr(torchvision.models, arch)()
    net.fc = nn.Identity()
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.load_state_dict(load_file(weights), strict=True)
    net.eval()
    p = load_file(probe)
    with torch.no_grad():
        ours = net(p["input"])
    diff = (ours - p["features"]).abs().max().item()
    scale = p["features"].abs().max().item()
    print(f"torchvision {arch} loaded strictly; max abs diff {diff:.3e} (features up to {scale:.3e})")
    sys.exit(0 if diff <= 1e-4 * max(scale, 1.0) else 1)


if __name__ == "__main__":
    main()
