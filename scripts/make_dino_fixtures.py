#!/usr/bin/env python3
"""Golden fixtures for DINO, computed with PyTorch as facebookresearch/dino computes them
(main_dino.py's DINOLoss, vision_transformer.py's DINOHead, utils.py's schedules), written here
from those formulas.

Run from the repository root:  .venv-ref/bin/python scripts/make_dino_fixtures.py
Writes tests/fixtures/dino_*.safetensors (small; committed):

- dino_loss_<case>: student (crops*n x K), teacher (2n x K), center (1 x K), temperatures ->
  loss, grad_student, center_after (float64 arithmetic, stored as float32).
- dino_head: features, the MLP's weights and biases (PyTorch layout, out x in), weight_v
  (K x B) -> output of DINOHead (GELU MLP, L2 normalisation, weight-normed last layer with the
  gain fixed at 1) and the gradients of sum(output * probe) for features, weight_v and the
  first Linear's weight.
- dino_schedules: the teacher temperature per epoch (np.linspace warm-up, then constant) and the
  teacher momentum per iteration (utils.cosine_scheduler(0.996, 1, epochs, niter)).
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
f32 = lambda t: t.detach().float().contiguous()
scalar = lambda v: torch.tensor([float(v)], dtype=torch.float32)


def rounded(t):
    """Rounded to float32 first: the Rust side reads float32."""
    return t.float().double()


def dino_loss(student_output, teacher_output, center, ncrops, student_temp, temp):
    """DINOLoss.forward: cross-entropy of every student crop to each teacher (global) crop,
    the pairs of one crop with itself left out."""
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / temp, dim=-1).detach().chunk(2)
    total_loss, n_loss_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


def loss_fixture(name, n, k, local, student_temp, temp, center_momentum, seed):
    g = torch.Generator().manual_seed(seed)
    ncrops = 2 + local
    # Logits of unit vectors against unit prototypes lie in [-1, 1].
    teacher = rounded(torch.randn(2 * n, k, generator=g, dtype=torch.float64) * 0.3)
    # The student's logits near the teacher's on the global crops, as after some training.
    student = torch.randn(ncrops * n, k, generator=g, dtype=torch.float64) * 0.3
    student[: 2 * n] += teacher
    student = rounded(student).requires_grad_(True)
    center = rounded(torch.randn(1, k, generator=g, dtype=torch.float64) * 0.1)
    loss = dino_loss(student, teacher, center, ncrops, student_temp, temp)
    loss.backward()
    # DINOLoss.update_center on one process.
    batch_center = torch.sum(teacher, dim=0, keepdim=True) / len(teacher)
    center_after = center * center_momentum + batch_center * (1 - center_momentum)
    save_file({"student": f32(student), "teacher": f32(teacher), "center": f32(center),
               "student_temp": scalar(student_temp), "teacher_temp": scalar(temp), "crops": scalar(ncrops),
               "center_momentum": scalar(center_momentum), "loss": f32(loss.reshape(1)),
               "grad_student": f32(student.grad), "center_after": f32(center_after)},
              os.path.join(OUT, f"dino_loss_{name}.safetensors"))


def head_fixture(n=6, d_in=12, hidden=10, bottleneck=5, k=9, seed=71):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                        nn.Linear(hidden, bottleneck)).double()
    last = nn.utils.weight_norm(nn.Linear(bottleneck, k, bias=False)).double()
    last.weight_g.data.fill_(1)
    last.weight_g.requires_grad = False
    features = rounded(torch.randn(n, d_in, generator=g, dtype=torch.float64)).requires_grad_(True)
    with torch.no_grad():
        for p in list(mlp.parameters()) + [last.weight_v]:
            p.copy_(rounded(p))
    out = last(F.normalize(mlp(features), dim=-1, p=2))
    probe = rounded(torch.randn(n, k, generator=g, dtype=torch.float64))
    (out * probe).sum().backward()
    tensors = {"features": f32(features), "weight_v": f32(last.weight_v), "probe": f32(probe), "output": f32(out),
               "grad_features": f32(features.grad), "grad_weight_v": f32(last.weight_v.grad),
               "grad_mlp0_weight": f32(mlp[0].weight.grad)}
    for i, j in enumerate([0, 2, 4]):
        tensors[f"mlp{i}_weight"] = f32(mlp[j].weight)
        tensors[f"mlp{i}_bias"] = f32(mlp[j].bias)
    save_file(tensors, os.path.join(OUT, "dino_head.safetensors"))


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """utils.cosine_scheduler."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup_schedule, schedule))


def schedules_fixture(epochs=12, warmup_epochs=5, warmup_temp=0.04, temp=0.07, niter=7):
    # DINOLoss.__init__'s teacher_temp_schedule.
    temps = np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs), np.ones(epochs - warmup_epochs) * temp))
    momentum = cosine_scheduler(0.996, 1, epochs, niter)
    save_file({"teacher_temps": torch.tensor(temps, dtype=torch.float32),
               "settings": torch.tensor([epochs, warmup_epochs, warmup_temp, temp, niter], dtype=torch.float32),
               "momentum": torch.tensor(momentum, dtype=torch.float32)},
              os.path.join(OUT, "dino_schedules.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    # Two global crops only (solo-learn's CIFAR recipe), and with 4 local crops.
    loss_fixture("n8_k16", 8, 16, 0, 0.1, 0.07, 0.9, seed=81)
    loss_fixture("n4_k32_local4", 4, 32, 4, 0.1, 0.04, 0.9, seed=82)
    head_fixture()
    schedules_fixture()


if __name__ == "__main__":
    main()
