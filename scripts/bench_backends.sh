#!/usr/bin/env bash
# The CPU backend comparison of BENCHMARKS.md: one training step of ResNet-18 (CIFAR stem) with a
# 2048-2048-2048 projector on two views of N=128 32×32 images, for each backend and build option,
# then PyTorch's figure for the same step on the same machine.
# Usage: scripts/bench_backends.sh [steps]   (from the repository root)
# The cubecl `cpu` backend is left out: it does not build offline (its LLVM is downloaded at build time).
set -euo pipefail
steps=${1:-3}
# ndarray's BLAS variant links the system OpenBLAS (Debian: apt-get install libopenblas-dev).
variants=(
  "plain:flex,ndarray"
  "simd-rayon:flex,ndarray,simd,rayon"
  "openblas:ndarray,openblas-system,rayon"
)
for v in "${variants[@]}"; do
  name=${v%%:*}; features=${v#*:}
  cargo build --release --quiet --no-default-features --features "$features" --target-dir "target/bench-$name"
done
for v in "${variants[@]}"; do
  name=${v%%:*}
  echo "== build options: $name"
  backends=flex,ndarray
  [ "$name" = openblas ] && backends=ndarray
  # ndarray needs minutes per step here: each backend gets at most 10 minutes.
  for b in ${backends//,/ }; do
    timeout 600 "target/bench-$name/release/barlow" bench step --backend "$b" --steps "$steps" 2>/dev/null \
      || echo "      $b: no result within 600 s"
  done
done
echo "== PyTorch"
.venv-ref/bin/python scripts/torch_step.py --steps "$steps"
