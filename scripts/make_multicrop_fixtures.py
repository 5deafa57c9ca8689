#!/usr/bin/env python3
"""Golden statistics of multi-crop's RandomResizedCrop, as torchvision draws and PIL resamples it.

Run from the repository root:  /work/venv/bin/python scripts/make_multicrop_fixtures.py
Writes tests/fixtures/multicrop.safetensors (small; committed).

For each scale range (DINO's local crops, its ResNet-50 command's local and global crops) it
draws 20,000 boxes on a 200×160 image with torchvision's own `RandomResizedCrop.get_params` and
keeps the quantiles of the area fraction, the log aspect ratio and the box centre: barlow's boxes
come from another generator, so it is their distribution that must match. A local crop resampled
to 96 px by torchvision's `resized_crop` (bicubic, PIL) is the pixel golden.
"""
import os

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "multicrop.safetensors")
W, H, DRAWS = 200, 160, 20000
QUANTILES = np.linspace(0.05, 0.95, 19)

torch.manual_seed(0)
out = {"quantiles": torch.tensor(QUANTILES, dtype=torch.float32)}
canvas = torch.empty(3, H, W)
for name, scale in [("dino_local", (0.05, 0.4)), ("resnet_local", (0.05, 0.14)), ("resnet_global", (0.14, 1.0))]:
    boxes = np.array([T.RandomResizedCrop.get_params(canvas, scale=scale, ratio=(3 / 4, 4 / 3)) for _ in range(DRAWS)],
                     dtype=np.float64)
    top, left, h, w = boxes.T
    stats = {
        "area": w * h / (W * H),
        "log_ratio": np.log(w / h),
        "centre_x": (left + w / 2) / W,
        "centre_y": (top + h / 2) / H,
    }
    out[f"{name}.scale"] = torch.tensor(scale, dtype=torch.float32)
    for key, values in stats.items():
        out[f"{name}.{key}"] = torch.tensor(np.quantile(values, QUANTILES), dtype=torch.float32)

# A small smooth textured image, and one local crop of it at 96 px (upsampled, as on CIFAR).
yy, xx = np.mgrid[0:40, 0:48]
base = np.stack([np.sin(xx / 4.0), np.cos(yy / 3.0), np.sin((xx + yy) / 5.0)], -1) * 0.4 + 0.5
rng = np.random.default_rng(0)
u8 = np.clip((base + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).round().astype(np.uint8)
pil = Image.fromarray(u8)
top, left, h, w = 7, 9, 17, 15
local = F.resized_crop(pil, top, left, h, w, [96, 96], interpolation=T.InterpolationMode.BICUBIC)
out["image"] = torch.from_numpy(u8).float() / 255
out["local_box"] = torch.tensor([left, top, w, h], dtype=torch.float32)
out["local_96"] = torch.from_numpy(np.array(local)).float() / 255
save_file(out, OUT)
print("wrote", OUT)
