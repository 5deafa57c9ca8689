#!/usr/bin/env python3
"""PyTorch's side of `barlow bench ops`: the same layers, the same operation categories.

    target/release/barlow bench ops --list > /tmp/layers.json
    .venv-ref/bin/python scripts/torch_ops.py /tmp/layers.json [--threads 2] [--cpu-time]

Each convolution's forward, input gradient and weight gradient are timed separately
(`aten.convolution_backward` with one output at a time), and BatchNorm with the ReLU that follows
it (torchvision applies it in place) forward and backward. Prints seconds per step (two views).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

CATEGORIES = ["conv forward", "conv input grad", "conv weight grad", "BN(+ReLU) forward", "BN(+ReLU) backward"]


def timer(reps, cpu_time, f):
    clock = time.process_time if cpu_time else time.perf_counter
    best = float("inf")
    for _ in range(reps):
        start = clock()
        f()
        best = min(best, clock() - start)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("layers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cpu-time", action="store_true")
    p.add_argument("--per-layer", action="store_true", help="also print each layer's times")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layers = json.load(open(a.layers))
    total = [0.0] * 5
    with torch.no_grad():
        for layer in layers:
            t = [0.0] * 5
            time_it = lambda f: timer(a.reps, a.cpu_time, f)
            conv = layer["conv"]
            if conv:
                x, w = torch.randn(conv["x"]), torch.randn(conv["weight"])
                s, pad = conv["stride"], conv["padding"]
                y = F.conv2d(x, w, stride=s, padding=pad)
                dy = torch.randn_like(y)
                t[0] += time_it(lambda: F.conv2d(x, w, stride=s, padding=pad))

                def backward(mask):
                    return torch.ops.aten.convolution_backward(
                        dy, x, w, None, [s, s], [pad, pad], [1, 1], False, [0, 0], 1, mask)

                if layer["input_grad"]:
                    t[1] += time_it(lambda: backward([True, False, False]))
                t[2] += time_it(lambda: backward([False, True, False]))
            shape, c, relu = layer["bn"], layer["bn"][1], layer["relu"]
            x, gamma, beta, dy = torch.randn(shape), torch.rand(c) + 0.5, torch.randn(c), torch.randn(shape)

            def bn_forward():
                y = F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
                return F.relu_(y) if relu else y

            t[3] += time_it(bn_forward)
            y, mean, invstd = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.1, 1e-5)
            if relu:
                y = F.relu(y)

            def bn_backward():
                g = torch.ops.aten.threshold_backward(dy, y, 0) if relu else dy
                return torch.ops.aten.native_batch_norm_backward(
                    g, x, gamma, None, None, mean, invstd, True, 1e-5, [True, True, True])

            t[4] += time_it(bn_backward)
            if a.per_layer:
                print(f"pytorch {layer['name']:<22} {layer['bn']} " + " ".join(f"{v:.4f}" for v in t))
            total = [x + y for x, y in zip(total, t)]
    kind = "CPU" if a.cpu_time else "wall-clock"
    print(f"PyTorch {torch.__version__}, {a.threads} threads, {kind} seconds per step (two views):")
    for name, v in zip(CATEGORIES, total):
        print(f"{name:<20}{2 * v:>10.3f}")
    print(f"{'total':<20}{2 * sum(total):>10.3f}")


if __name__ == "__main__":
    main()
