#!/usr/bin/env bash
# Two builds of barlow and PyTorch on the step of BENCHMARKS.md ("One training step"), in
# alternating rounds, so that the machine's swings fall on all three alike.
# Usage: scripts/bench_step_ab.sh BEFORE_BINARY AFTER_BINARY [rounds] [steps]   (from the repository root)
#   git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release --target-dir /tmp/before-target)
#   scripts/bench_step_ab.sh /tmp/before-target/release/barlow target/release/barlow 4 3
set -euo pipefail
before=$1 after=$2 rounds=${3:-4} steps=${4:-3}
python=${BARLOW_TORCH_PYTHON:-.venv-ref/bin/python}
seconds() { grep -oE '[0-9]+\.[0-9]+ s/step' | head -1 | cut -d' ' -f1; }
echo "round before after pytorch (s/step; $(nproc) cores, $(date -u +%FT%TZ))"
for r in $(seq 1 "$rounds"); do
  b=$("$before" bench step --backend flex --steps "$steps" 2>/dev/null | seconds)
  a=$("$after" bench step --backend flex --steps "$steps" 2>/dev/null | seconds)
  t=$("$python" scripts/torch_step.py --steps "$steps" 2>/dev/null | seconds)
  echo "$r $b $a $t"
done
