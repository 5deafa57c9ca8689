#!/usr/bin/env python3
"""How far TF32 moves PyTorch's own Barlow Twins step from fp32: the yardstick for
`barlow bench check --backend cuda`, whose "f32" is TF32 (cubek-matmul promotes f32 products to
TF32 on tensor cores; see DEVELOPERS.md).

The same shapes and measures as `bench check`: one forward and backward of the step that
`torch_step.py` times, on two random views (uniform in [-2, 2)), with the same weights; the
relative error of the loss and the worst ‖g − g_ref‖ / ‖g_ref‖ over the parameters, with fp32
on the same GPU as the reference (and, as a floor, fp32 on the CPU against fp32 on the GPU).
If TF32 alone moves PyTorch's gradients as far as barlow's CUDA build moves its own (4.7 % /
7.2 % on an H200, 2026-11-27), the check's failure is TF32, not a wrong kernel.

  python3 scripts/torch_tf32_check.py [--json]          # on a GPU; on a CPU it only runs
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_step import BarlowTwins  # noqa: E402

# The two shapes `scripts/gpu_check.sh` checks barlow on.
CASES = [
    dict(arch="resnet18", batch=16, size=32, projector="2048-2048-2048"),
    dict(arch="resnet50", batch=8, size=96, projector="1024-1024-1024"),
]


def step(model, views, device, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    model = model.to(device)
    model.zero_grad(set_to_none=True)
    loss = model(*(v.to(device) for v in views))
    loss.backward()
    grads = {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()}
    return loss.item(), grads


def compare(got, want):
    loss_err = abs(got[0] - want[0]) / max(abs(want[0]), 1e-30)
    worst, worst_name = 0.0, ""
    for name, g in want[1].items():
        diff, norm = (got[1][name] - g).norm().item(), g.norm().item()
        err = diff / norm if norm > 0 else diff
        if err > worst:
            worst, worst_name = err, name
    return loss_err, worst, worst_name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    for case in CASES:
        torch.manual_seed(0)
        model = BarlowTwins(case["arch"], case["size"] <= 64, [int(s) for s in case["projector"].split("-")])
        state = {k: v.clone() for k, v in model.state_dict().items()}
        g = torch.Generator().manual_seed(7)
        shape = (case["batch"], 3, case["size"], case["size"])
        views = [torch.rand(shape, generator=g) * 4 - 2 for _ in range(2)]

        def run(dev, tf32):
            model.load_state_dict(state)
            return step(model, views, dev, tf32)

        fp32 = run(device, False)
        rows = [("tf32", "fp32 on " + device.type, run(device, True), fp32),
                ("fp32 on cpu", "fp32 on " + device.type, run(torch.device("cpu"), False), fp32)]
        for name, ref, got, want in rows:
            loss_err, worst, worst_name = compare(got, want)
            r = dict(framework="pytorch-check", check=name, reference=ref, **case, loss=got[0], reference_loss=want[0],
                     loss_rel_err=loss_err, worst_grad_rel_err=worst, worst_grad=worst_name,
                     torch=torch.__version__,
                     device=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU")
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"   pytorch {case['arch']} N={case['batch']} {case['size']}px: {name} vs {ref}: "
                      f"loss rel err {loss_err:.1e}, worst gradient rel err {worst:.1e} ({worst_name})", flush=True)


if __name__ == "__main__":
    main()
