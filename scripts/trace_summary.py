#!/usr/bin/env python3
"""Where a training step's time goes, from PyTorch profiler traces (Chrome JSON): barlow's
(`barlow bench step --backend tch-cuda --profile DIR`) and PyTorch's own
(`scripts/torch_step.py --profile DIR`), side by side.

For each trace: GPU kernels per step and their time, top-level CPU operations per step, and the
kernels that take the most time. Standard library only (runs on the GPU machine as it is).

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


def top_level(ops):
    """CPU operations not inside another one on the same thread (what the framework called)."""
    out = []
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[e.get("tid")].append(e)
    for group in by_thread.values():
        group.sort(key=lambda e: (e["ts"], -e["dur"]))
        end = float("-inf")
        for e in group:
            if e["ts"] >= end:
                out.append(e)
                end = e["ts"] + e["dur"]
    return out


# ATen operations that only allocate, view or read metadata, or copy a wrapped scalar: no kernel.
NO_KERNEL = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::as_strided", "aten::as_strided_",
             "aten::view", "aten::t", "aten::transpose", "aten::expand", "aten::detach", "detach", "aten::resize_",
             "aten::lift_fresh", "aten::reshape", "aten::_reshape_alias", "aten::unsqueeze", "aten::squeeze",
             "aten::alias", "aten::select", "aten::slice", "aten::permute", "aten::result_type",
             "aten::_unsafe_view", "aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::squeeze_",
             "aten::unsqueeze_", "aten::set_", "aten::resolve_conj", "aten::resolve_neg", "aten::to",
             "aten::_to_copy", "aten::copy_", "aten::zeros", "aten::ones"}


def computing(ops):
    """The operations that do the work: none of the operations they call does any (what is left
    once allocations, views and scalar copies are set aside), each a kernel on a GPU."""
    out = []
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[e.get("tid")].append(e)
    for group in by_thread.values():
        group.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack, inner = [], set()
        for i, e in enumerate(group):
            while stack and group[stack[-1]]["ts"] + group[stack[-1]]["dur"] <= e["ts"]:
                stack.pop()
            if e["name"] not in NO_KERNEL:
                inner.update(stack)  # its callers are not where the work is
            stack.append(i)
        out += [e for i, e in enumerate(group) if i not in inner and e["name"] not in NO_KERNEL]
    return out


def summarise(path, steps, top):
    events = load(path)
    kernels = [e for e in events if e.get("cat") == "kernel"]
    ops = top_level([e for e in events if e.get("cat") == "cpu_op"])
    name = os.path.basename(path)
    lines = [f"### {name}", ""]
    if kernels:
        total = sum(e["dur"] for e in kernels) / 1e3 / steps
        lines.append(f"{len(kernels) / steps:.0f} GPU kernels per step, {total:.2f} ms of kernel time per step; "
                     f"{len(ops) / steps:.0f} top-level CPU operations per step")
        by = collections.defaultdict(lambda: [0, 0.0])
        for e in kernels:
            by[e["name"]][0] += 1
            by[e["name"]][1] += e["dur"]
        rows = sorted(by.items(), key=lambda kv: -kv[1][1])[:top]
        lines += ["", "| kernel | per step | ms per step | share |", "|---|---:|---:|---:|"]
        for k, (n, dur) in rows:
            lines.append(f"| `{k[:90]}` | {n / steps:.0f} | {dur / 1e3 / steps:.3f} | {dur / 1e3 / steps / total:.1%} |")
    else:
        total = sum(e["dur"] for e in ops) / 1e3 / steps
        working = len(computing([e for e in events if e.get("cat") == "cpu_op"]))
        lines.append(f"no GPU kernels in the trace; {len(ops) / steps:.0f} top-level CPU operations per step, "
                     f"{total:.1f} ms per step; {working / steps:.0f} computing ATen operations per step "
                     "(each a kernel on a GPU; copies of wrapped scalars not counted)")
        by = collections.defaultdict(lambda: [0, 0.0])
        for e in ops:
            by[e["name"]][0] += 1
            by[e["name"]][1] += e["dur"]
        rows = sorted(by.items(), key=lambda kv: -kv[1][1])[:top]
        lines += ["", "| operation | per step | ms per step |", "|---|---:|---:|"]
        for k, (n, dur) in rows:
            lines.append(f"| `{k[:90]}` | {n / steps:.0f} | {dur / 1e3 / steps:.3f} |")
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
