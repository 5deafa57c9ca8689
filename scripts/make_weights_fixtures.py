#!/usr/bin/env python3
"""Weights files as torchvision and the official Barlow Twins release write them, for `--weights`.

Run from the repository root:  .venv-ref/bin/python scripts/make_weights_fixtures.py
Writes into tests/fixtures/ (random weights; the real keys, dtypes and containers):

- tv_resnet18_w2.pth: `torch.save(torchvision.models.resnet18().state_dict())`, and
  tv_resnet18_w2.safetensors: the same tensors without `fc` (what `barlow export` must give back).
- official_resnet50_w2.pth: the official release's `resnet50.pth`, which main.py writes as
  `torch.save(model.module.backbone.state_dict())` (torchvision ResNet-50, `fc = Identity`).
- official_checkpoint_w2.pth: its `checkpoint.pth`, `dict(epoch, model, optimizer)` with the model
  under DistributedDataParallel's `module.` prefix (`backbone.*`, `projector.*`, `bn.*`) and LARS's
  state (`mu` per parameter, two parameter groups); same backbone tensors as the file above.
- pickle_runs_code.pth: a state dict saved beside an object whose unpickling calls `os.system`.
  It is written here and never loaded: barlow must refuse it without running anything.

Every channel count is scaled by WIDTH / 64 (torchvision's ResNets have no width argument, so
the modules are built at full size and their tensors replaced) to keep the files small; `fc` gets
10 classes. barlow reads these as `--arch resnet18|resnet50 --width 2`.
"""
import os

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
WIDTH = 2
CLASSES = 10


def narrow(model):
    """Replaces every tensor by a random one with channels scaled by WIDTH / 64, in place."""
    for module in model.modules():
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if name == "num_batches_tracked":
                continue
            shape = list(t.shape)
            if isinstance(module, nn.Linear):  # torchvision's fc
                shape = [CLASSES, shape[1] * WIDTH // 64] if name == "weight" else [CLASSES]
            else:
                shape[0] = shape[0] * WIDTH // 64
                if len(shape) == 4 and shape[1] != 3:  # conv input channels, except the image's
                    shape[1] = shape[1] * WIDTH // 64
            if isinstance(module, nn.Conv2d):
                fan_in = shape[1] * shape[2] * shape[3]
                new = torch.randn(shape) * (2.0 / fan_in) ** 0.5
            elif name == "running_var":
                new = torch.rand(shape) + 0.5
            elif name == "weight" and isinstance(module, nn.BatchNorm2d):
                new = 1.0 + 0.1 * torch.randn(shape)
            else:
                new = 0.1 * torch.randn(shape)
            if name in module._parameters:
                setattr(module, name, nn.Parameter(new))
            else:
                module._buffers[name] = new
    return model


class BarlowLayout(nn.Module):
    """The attributes of the official BarlowTwins module: backbone, projector MLP, final BN."""

    def __init__(self, backbone, sizes):
        super().__init__()
        self.backbone = backbone
        layers = []
        for d_in, d_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.projector = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)


class Ddp(nn.Module):
    """What DistributedDataParallel adds to the keys: a `module.` prefix."""

    def __init__(self, module):
        super().__init__()
        self.module = module


class LarsState(torch.optim.Optimizer):
    """An optimizer with LARS's hyper-parameters, to write its state dict (`mu` per parameter)."""

    def __init__(self, params):
        defaults = dict(lr=0.2, weight_decay=1.5e-6, momentum=0.9, eta=0.001,
                        weight_decay_filter=True, lars_adaptation_filter=True)
        super().__init__(params, defaults)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this file ran code when it was loaded",))


def main():
    torch.manual_seed(0)
    r18 = narrow(torchvision.models.resnet18())
    state = r18.state_dict()
    torch.save(state, os.path.join(OUT, "tv_resnet18_w2.pth"))
    encoder = {k: v for k, v in state.items() if not k.startswith("fc.")}
    save_file(encoder, os.path.join(OUT, "tv_resnet18_w2.safetensors"))

    r50 = narrow(torchvision.models.resnet50())
    r50.fc = nn.Identity()
    for name, t in r50.state_dict().items():
        if name.endswith("num_batches_tracked"):
            t.fill_(1000)  # a trained network's counters
    model = BarlowLayout(r50, [8 * WIDTH * 4, 32, 32, 32])
    torch.save(model.backbone.state_dict(), os.path.join(OUT, "official_resnet50_w2.pth"))
    weights = [p for p in model.parameters() if p.ndim != 1]
    biases = [p for p in model.parameters() if p.ndim == 1]
    optimizer = LarsState([{"params": weights}, {"params": biases}])
    for p in model.parameters():
        optimizer.state[p]["mu"] = 0.01 * torch.randn_like(p)
    checkpoint = dict(epoch=1000, model=Ddp(model).state_dict(), optimizer=optimizer.state_dict())
    torch.save(checkpoint, os.path.join(OUT, "official_checkpoint_w2.pth"))

    torch.save({"state_dict": state, "note": RunsCode()}, os.path.join(OUT, "pickle_runs_code.pth"))
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
