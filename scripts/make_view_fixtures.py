#!/usr/bin/env python3
"""Golden outputs of each augmentation, computed as torchvision and PIL compute them.

Run from the repository root:  .venv-ref/bin/python scripts/make_view_fixtures.py
Writes tests/fixtures/views.safetensors (small; committed). Images are H×W×3 float32 in [0, 1].
"""
import os

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "views.safetensors")

rng = np.random.default_rng(0)
# A smooth image with texture, so that every op changes it visibly; odd sizes catch off-by-ones.
h, w = 21, 26
yy, xx = np.mgrid[0:h, 0:w]
base = np.stack([np.sin(xx / 4.0), np.cos(yy / 3.0), np.sin((xx + yy) / 5.0)], -1) * 0.4 + 0.5
u8 = np.clip((base + rng.normal(0, 0.08, base.shape)) * 255, 0, 255).round().astype(np.uint8)
img = torch.from_numpy(u8).permute(2, 0, 1).float() / 255  # 3×H×W


def hwc(t):
    return t.permute(1, 2, 0).contiguous().float()


out = {"input": hwc(img)}
# RandomResizedCrop on a PIL image: crop, then bicubic resize (with PIL's antialiasing).
pil = Image.fromarray(u8)
for name, box, size in [("crop_up", (3, 2, 14, 11), 32), ("crop_down", (1, 0, 24, 20), 8), ("crop_full", (0, 0, 26, 21), 26)]:
    x, y, cw, ch = box
    resized = pil.crop((x, y, x + cw, y + ch)).resize((size, size), Image.BICUBIC)
    out[name] = torch.from_numpy(np.array(resized)).float() / 255
    out[name + "_box"] = torch.tensor(box, dtype=torch.float32)
out["brightness_1.3"] = hwc(F.adjust_brightness(img, 1.3))
out["contrast_0.7"] = hwc(F.adjust_contrast(img, 0.7))
out["saturation_1.2"] = hwc(F.adjust_saturation(img, 1.2))
out["saturation_0"] = hwc(F.adjust_saturation(img, 0.0))
out["hue_0.08"] = hwc(F.adjust_hue(img, 0.08))
out["hue_-0.1"] = hwc(F.adjust_hue(img, -0.1))
out["grayscale"] = hwc(F.rgb_to_grayscale(img, 3))
out["blur_5_1.3"] = hwc(F.gaussian_blur(img, [5, 5], [1.3, 1.3]))
out["blur_9_0.6"] = hwc(F.gaussian_blur(img, [9, 9], [0.6, 0.6]))
out["solarize"] = hwc(F.solarize(img, 128 / 255))
out["hflip"] = hwc(F.hflip(img))
save_file(out, OUT)
print("wrote", OUT)
