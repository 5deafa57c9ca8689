#!/usr/bin/env python3
"""Where a training step's time goes, from PyTorch profiler traces (Chrome JSON): barlow's
(`barlow bench step --backend tch-cuda --profile DIR`) and PyTorch's own
(`scripts/torch_step.py --profile DIR`), side by side.

For each trace: GPU kernels per step and their time, top-level CPU operations per step, the
kernels that take the most time, and how often per step the host waits for the GPU. Standard
library only (runs on the GPU machine as it is).

Usage: scripts/trace_summary.py [--steps N] [--top K] TRACE.json...
"""
import argparse
import collections
import json
import os
import sys


def load(path):
    with open(path) as f:
        events = json.load(f).get("traceEvents", [])
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def nested(ops):
    """Each thread's operations in call order, with the indices of the calls each one is inside."""
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[e.get("tid")].append(e)
    for group in by_thread.values():
        group.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for i, e in enumerate(group):
            while stack and group[stack[-1]]["ts"] + group[stack[-1]]["dur"] <= e["ts"]:
                stack.pop()
            yield group, i, list(stack)
            stack.append(i)


def top_level(ops):
    """CPU operations not inside another one on the same thread (what the framework called)."""
    return [group[i] for group, i, callers in nested(ops) if not callers]


# ATen operations that only allocate, view or read metadata, or convert or copy (on these traces
# mostly the wrapped scalar of `mul(Tensor, Scalar)`): not counted as kernels.
NO_KERNEL = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::as_strided", "aten::as_strided_",
             "aten::view", "aten::t", "aten::transpose", "aten::expand", "aten::detach", "detach", "aten::resize_",
             "aten::lift_fresh", "aten::reshape", "aten::_reshape_alias", "aten::unsqueeze", "aten::squeeze",
             "aten::alias", "aten::select", "aten::slice", "aten::permute", "aten::result_type",
             "aten::_unsafe_view", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::squeeze_",
             "aten::unsqueeze_", "aten::set_", "aten::resolve_conj", "aten::resolve_neg", "aten::to",
             "aten::_to_copy", "aten::copy_", "aten::zeros", "aten::ones"}


def computing(ops):
    """The operations that do the work: none of the operations they call does any (what is left
    once allocations, views and conversions are set aside), each a kernel on a GPU."""
    working, inner = [], set()
    for group, i, callers in nested(ops):
        if group[i]["name"] not in NO_KERNEL:
            working.append((id(group), i, group[i]))
            inner.update((id(group), c) for c in callers)  # its callers are not where the work is
    return [e for g, i, e in working if (g, i) not in inner]


# CUDA runtime calls after which the host has waited for the GPU.
WAITS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}


def host_waits(events):
    """Where the host waits for the GPU: on a GPU trace its synchronising runtime calls; on a CPU
    trace the framework's own moves of a tensor to a device (`to` with no dtype), which from host
    memory wait for the GPU's queue on LibTorch."""
    runtime = [e for e in events if e.get("cat") == "cuda_runtime" and e["name"] in WAITS]
    if runtime:
        return runtime
    moves = [e for e in top_level([e for e in events if e.get("cat") == "cpu_op"]) if e["name"] == "aten::to"]
    return [e for e in moves if (e.get("args", {}).get("Concrete Inputs") or ["", "?"])[1:2] == [""]]


def table(events, steps, top, heading, total=None):
    """The events by name, costliest first: count and ms per step (and share of `total` ms)."""
    by = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        by[e["name"]][0] += 1
        by[e["name"]][1] += e["dur"]
    share = total is not None
    lines = ["", f"| {heading} | per step | ms per step |" + (" share |" if share else ""),
             "|---|---:|---:|" + ("---:|" if share else "")]
    for name, (n, dur) in sorted(by.items(), key=lambda kv: -kv[1][1])[:top]:
        ms = dur / 1e3 / steps
        lines.append(f"| `{name[:90]}` | {n / steps:.0f} | {ms:.3f} |" + (f" {ms / total:.1%} |" if share else ""))
    return lines


def summarise(path, steps, top):
    events = load(path)
    kernels = [e for e in events if e.get("cat") == "kernel"]
    cpu = [e for e in events if e.get("cat") == "cpu_op"]
    ops = top_level(cpu)
    lines = [f"### {os.path.basename(path)}", ""]
    if kernels:
        total = sum(e["dur"] for e in kernels) / 1e3 / steps
        lines.append(f"{len(kernels) / steps:.0f} GPU kernels per step, {total:.2f} ms of kernel time per step; "
                     f"{len(ops) / steps:.0f} top-level CPU operations per step")
        lines += table(kernels, steps, top, "kernel", total)
    else:
        total = sum(e["dur"] for e in ops) / 1e3 / steps
        lines.append(f"no GPU kernels in the trace; {len(ops) / steps:.0f} top-level CPU operations per step, "
                     f"{total:.1f} ms per step; {len(computing(cpu)) / steps:.0f} computing ATen operations per step "
                     "(each a kernel on a GPU; conversions and copies not counted)")
        lines += table(ops, steps, top, "operation")
    waits = host_waits(events)
    lines.append(f"\n{len(waits) / steps:g} host waits for the device per step"
                 + (f" ({', '.join(sorted(set(w['name'] for w in waits)))})" if waits else ""))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--steps", type=int, default=3, help="steps each trace holds [3]")
    ap.add_argument("--top", type=int, default=15, help="kernels (or operations) listed per trace [15]")
    args = ap.parse_args()
    for path in args.traces:
        try:
            print(summarise(path, args.steps, args.top))
        except (OSError, ValueError, KeyError) as e:
            print(f"### {path}\n\nunreadable trace: {e}\n")
            sys.exit(1)


if __name__ == "__main__":
    main()
