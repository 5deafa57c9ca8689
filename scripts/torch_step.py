#!/usr/bin/env python3
"""PyTorch's time for the step `barlow bench step` measures: a ResNet (torchvision) + projector,
two views of N images, the official loss, backward, and the official LARS update.

It measures the way barlow does: untimed steps until two in a row take the same time (within
10%, at most 10), then the timed steps queued back to back with one wait at the end
(`torch.cuda.synchronize()` on a GPU). On CUDA it reports each precision of issue 11:
fp32 (TF32 off), tf32 (TF32 matmuls and convolutions), bf16 (autocast to bfloat16 and
channels_last; the standardisation, C and the loss stay in fp32, as barlow's bf16 does), each
with `cudnn.benchmark` on, as the official code runs.

Run from the repository root:
  .venv-ref/bin/python scripts/torch_step.py [--steps 3]                  # CPU, the default step
  python3 scripts/torch_step.py --arch resnet50 --size 224 --batch 64 --projector 8192-8192-8192
"""
import argparse
import json
import os
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


def resnet(arch, width):
    """torchvision's ResNet with every stage's channels scaled by width/64, as `barlow --width`."""
    if width == 64:
        return getattr(torchvision.models, arch)(zero_init_residual=True)
    block, layers = {"resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
                     "resnet34": (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
                     "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3])}[arch]

    class Scaled(torchvision.models.ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:  # the first stage follows a stem of `width` channels
                self.inplanes = width
            return super()._make_layer(block, planes * width // 64, blocks, stride, dilate)

    net = Scaled(block, layers, zero_init_residual=True)
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.fc = nn.Linear(8 * width * block.expansion, 1)
    return net


class BarlowTwins(nn.Module):
    def __init__(self, arch, width, cifar_stem, sizes, lambd=0.0051):
        super().__init__()
        self.backbone = resnet(arch, width)
        if cifar_stem:
            self.backbone.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.backbone.maxpool = nn.Identity()
        features = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        sizes = [features] + sizes
        layers = []
        for i in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.projector = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)
        self.lambd = lambd

    def forward(self, y1, y2):
        z1, z2 = self.projector(self.backbone(y1)), self.projector(self.backbone(y2))
        # Under bf16 autocast too, the standardisation, C and the loss are computed in fp32.
        with torch.autocast(device_type=y1.device.type, enabled=False):
            c = self.bn(z1.float()).T @ self.bn(z2.float()) / y1.shape[0]
            on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
            off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambd * off_diag


def measure(args, device, precision):
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    if cuda:
        # As the official main.py: cuDNN times its algorithms once per shape (barlow's LibTorch
        # backend does the same).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    bf16 = precision == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    model = BarlowTwins(args.arch, args.width, args.size <= 64, [int(s) for s in args.projector.split("-")])
    model = model.to(device, memory_format=layout)
    weights = [p for p in model.parameters() if p.ndim != 1]
    biases = [p for p in model.parameters() if p.ndim == 1]
    opt = LARS([{"params": weights, "lr": 0.02}, {"params": biases, "lr": 0.00048}], lr=0, weight_decay=1.5e-6)
    shape = (args.batch, 3, args.size, args.size)

    # Drawn once, as `barlow bench step` does: in training the views come from the loader.
    views = [[torch.randn(shape, device=device).contiguous(memory_format=layout) for _ in range(2)] for _ in range(2)]
    steps = [0]

    def step():
        y1, y2 = views[steps[0] % len(views)]
        steps[0] += 1
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(y1, y2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    warm, start = [], time.perf_counter()
    while args.warmup > 0:
        t = time.perf_counter()
        step().item()
        sync()
        warm.append(time.perf_counter() - t)
        steady = len(warm) > 1 and abs(warm[-1] - warm[-2]) <= 0.1 * warm[-2]
        if len(warm) >= args.warmup and (steady or len(warm) >= args.warmup_max):
            break
    warmup_s = time.perf_counter() - start
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss = loss.item()
    sync()
    mean = (time.perf_counter() - start) / args.steps
    if args.profile:
        # The same record `barlow bench step --profile` makes (scripts/trace_summary.py).
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(args.profile_steps):
                step().item()
            sync()
        os.makedirs(args.profile, exist_ok=True)
        prof.export_chrome_trace(os.path.join(args.profile, f"pytorch-{precision}.json"))
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    return dict(framework="pytorch", precision=precision, arch=args.arch, width=args.width, batch=args.batch, size=args.size,
                projector=args.projector, s_per_step=mean, images_per_s=args.batch / mean, steps=args.steps,
                warmup=dict(steps=len(warm), seconds=warmup_s, first_step_s=warm[0] if warm else None),
                loss=loss, torch=torch.__version__, device=where)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    ap.add_argument("--width", type=int, default=64, help="channels of the first stage (64: the standard ResNet); "
                    "a small width leaves mostly the per-operation overhead")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=32, help="up to 64 px the CIFAR stem, above it the ImageNet one")
    ap.add_argument("--projector", default="2048-2048-2048")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps at least (then until steady)")
    ap.add_argument("--warmup-max", type=int, default=10, help="...or this many untimed steps, whichever first")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None,
                    help="comma-separated fp32, tf32, bf16 [default: all three on CUDA, fp32 on a CPU]")
    ap.add_argument("--profile", metavar="DIR", help="after the timed steps, trace --profile-steps more with "
                    "torch.profiler into DIR/pytorch-PRECISION.json")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per precision instead of a sentence")
    args = ap.parse_args()
    device = torch.device(args.device)
    precisions = args.precision or ("fp32,tf32,bf16" if device.type == "cuda" else "fp32")
    for precision in precisions.split(","):
        r = measure(args, device, precision)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"   pytorch {precision}: {r['s_per_step']:.3f} s/step  {r['images_per_s']:.1f} images/s  "
                  f"(N={args.batch}, {args.size}×{args.size}, {args.steps} timed steps, "
                  f"torch {torch.__version__}, {r['device']})", flush=True)


if __name__ == "__main__":
    main()
