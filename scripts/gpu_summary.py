#!/usr/bin/env python3
"""The table of scripts/gpu_check.sh: barlow's step per backend next to PyTorch's, the warm-up
(compilation and autotuning) each backend needed, the correctness checks, and the training run.

  python3 scripts/gpu_summary.py RESULTS.jsonl [TRAIN_METRICS.jsonl]
"""
import datetime
import json
import os
import sys


def rows(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def main():
    results = rows(sys.argv[1])
    metrics = rows(sys.argv[2]) if len(sys.argv) > 2 else []
    torch = [r for r in results if r.get("framework") == "pytorch"]
    steps = [r for r in results if "s_per_step" in r and "framework" not in r]
    checks = [r for r in results if "worst_grad_rel_err" in r and "backend" in r]
    torch_checks = [r for r in results if r.get("framework") == "pytorch-check"]
    card = next((r["device"] for r in torch if r.get("device")), "unknown card")
    print(f"# GPU check, {datetime.date.today()}, {card}\n")

    def shape(r):
        return (r["arch"], r.get("width", 64), r["batch"], r["size"], "-".join(map(str, r["projector"])) if isinstance(r["projector"], list) else r["projector"])

    print("## One training step (s/step, images/s in brackets); ratio = PyTorch time / barlow time "
          "at the same precision (barlow f32 vs PyTorch fp32, barlow bf16 vs PyTorch bf16 autocast)\n")
    precisions = ["fp32", "tf32", "bf16"]
    reference = {"f32": "fp32", "bf16": "bf16"}
    columns = sorted({(r["backend"], r.get("precision", "f32")) for r in steps})
    name = lambda c: f"{c[0]} {c[1]}"
    print("| step | " + " | ".join(f"barlow {name(c)}" for c in columns) + " | " +
          " | ".join(f"PyTorch {p}" for p in precisions) + " | " +
          " | ".join(f"{name(c)} ratio" for c in columns) + " |")
    print("|---" * (1 + 2 * len(columns) + len(precisions)) + "|")
    for key in sorted({shape(r) for r in steps + torch}):
        arch, width, batch, size, proj = key
        mine = {(r["backend"], r.get("precision", "f32")): r for r in steps if shape(r) == key}
        ref = {r["precision"]: r for r in torch if shape(r) == key}
        cell = lambda r: f"{r['s_per_step']:.3f} ({r['images_per_s']:.0f})" if r else "—"
        ratio = lambda c: (f"{ref[reference[c[1]]]['s_per_step'] / mine[c]['s_per_step']:.2f}×"
                           if c in mine and reference.get(c[1]) in ref else "—")
        arch = arch if width == 64 else f"{arch} width {width}"
        print(f"| {arch}, N={batch}, {size} px, {proj} | " + " | ".join(cell(mine.get(c)) for c in columns) +
              " | " + " | ".join(cell(ref.get(p)) for p in precisions) + " | " +
              " | ".join(ratio(c) for c in columns) + " |")

    # Issue 11's bar, on the table's rows (not the per-operation rows of the tiny-* stages).
    table = lambda r: not r.get("stage", "").startswith("tiny")
    print("\n## Each row at least 1.0× PyTorch at the same precision (issue 11's bar)\n")
    for backend in sorted({c[0] for c in columns}):
        met, found = True, []
        for key in sorted({shape(r) for r in torch if table(r)}):
            for precision in ("f32", "bf16"):
                mine = [r for r in steps if table(r) and shape(r) == key and r["backend"] == backend
                        and r.get("precision", "f32") == precision]
                ref = [r for r in torch if table(r) and shape(r) == key and r["precision"] == reference[precision]]
                if not mine or not ref:
                    met = False
                    found.append(f"{key[0]} N={key[2]} {precision}: not measured")
                    continue
                x = ref[-1]["s_per_step"] / mine[-1]["s_per_step"]
                met = met and x >= 1.0
                found.append(f"{key[0]} N={key[2]} {precision} {x:.2f}×")
        print(f"- {backend}: {'met' if met else 'NOT met'} ({'; '.join(found)})")

    print("\n## Warm-up before the timed steps (empty kernel cache at the start of the run)\n")
    print("| backend | step | warm-up steps | seconds | first step (s) | last (s) | settled |")
    print("|---|---|---|---|---|---|---|")
    for r in steps:
        w = r["warmup"]
        print(f"| {r['backend']} {r.get('precision', 'f32')} | {r['arch']} N={r['batch']} {r['size']} px | {w['steps']} | {w['seconds']:.1f} | "
              f"{w['first_step_s']:.2f} | {w['last_step_s']:.3f} | {'yes' if w['steady'] else 'no'} |")

    print("\n## The step against the CPU (flex): same weights, same batch\n")
    print("| backend | loss | loss rel. error | gradients | worst gradient rel. error | verdict |")
    print("|---|---|---|---|---|---|")
    for c in checks:
        print(f"| {c['backend']} ({c['stage']}) | {c['loss']:.4f} | {c['loss_rel_err']:.1e} | {c['gradients']} | "
              f"{c['worst_grad_rel_err']:.1e} ({c['worst_grad']}) | {'OK' if c['ok'] else 'FAIL'} |")

    if torch_checks:
        print("\n## PyTorch's own step under TF32 (the yardstick for barlow's CUDA \"f32\", which is TF32)\n")
        print("| step | compared | loss rel. error | worst gradient rel. error |")
        print("|---|---|---|---|")
        for c in torch_checks:
            print(f"| {c['arch']} N={c['batch']} {c['size']} px | {c['check']} vs {c['reference']} | "
                  f"{c['loss_rel_err']:.1e} | {c['worst_grad_rel_err']:.1e} ({c['worst_grad']}) |")

    step_lines = [m for m in metrics if m.get("kind") == "step"]
    epochs = [m for m in metrics if m.get("kind") == "epoch"]
    if step_lines:
        later = [m["images_per_s"] for m in step_lines[10:]] or [m["images_per_s"] for m in step_lines]
        print(f"\n## Training (cifar10 preset, CIFAR-10 JPEG folder)\n\n{len(step_lines)} steps, "
              f"last loss {step_lines[-1]['loss']:.1f}, {sum(later) / len(later):.0f} images/s after the first 10 steps")
        for e in epochs:
            knn = f", kNN top-1 {e['knn_top1']:.2f}%" if e.get("knn_top1") is not None else ""
            print(f"- epoch {e['epoch']} (step {e['step']}), {e['seconds']:.0f}s{knn}")


if __name__ == "__main__":
    main()
