#!/usr/bin/env bash
# The GPU check of issue 11, for a GPU machine with no internet and no Rust: is barlow's CUDA
# (and wgpu) step right, and how fast is it next to PyTorch's on the same card?
#
#   scripts/gpu_check.sh [--budget SECONDS] [--stages LIST] [KIT [OUT]]
#   scripts/gpu_check.sh --cpu-dry-run [KIT [OUT]]     # every stage here, tiny, with target/release/barlow
#
# KIT (default gpu-kit/, made by scripts/gpu_kit.sh, see DEVELOPERS.md) holds the stripped,
# compressed `--features cuda,wgpu` binary, the `--features tch` binary (built against the
# PyTorch version in barlow-tch.torch; it loads this machine's PyTorch libraries, and its stages
# fail at once where another version is installed), the Vulkan loader .debs and the CIFAR-10
# JPEG copy. A dry run takes its tch binary from $BARLOW_TCH and the libraries from $BARLOW_TCH_LIB.
# OUT (default $OUT, else /tmp/gpu-check) receives gpu_check.log (everything), results.jsonl
# (one JSON object per measurement), summary.md (the table) and train_metrics.jsonl.
#
# Stages run in the order of STAGES (default below), each under `timeout`, and the whole within
# --budget seconds (default 540, for one 10-minute device call): a stage that would start with
# too little time left is skipped and logged as such, and a failing stage does not stop the rest.
# The kernel cache starts empty (a fresh machine), so the first step of each shape shows how
# long compilation and autotuning take; later stages reuse what earlier ones tuned.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0 budget=540
# The check runs after the rows: on an empty kernel cache each new shape's first step compiles for
# about 84 s (H200, 2026-11-27), which would time the check out before anything is measured.
# LibTorch first: no kernels to compile, and PyTorch's own kernels (the likeliest route to its speed).
stages="setup check-tch row1-tch row1-torch row2-tch row2-torch row1bf-tch row2bf-tch tiny-tch tiny-torch profile-tch tf32-torch train-tch row1-cuda row2-cuda check-cuda row1bf-cuda row2bf-cuda train-cuda check-wgpu row1-wgpu row2-wgpu"
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-dry-run) dry=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --stages) stages=${2//,/ }; shift 2 ;;
    *) break ;;
  esac
done
kit=$(realpath -m "${1:-gpu-kit}")
out=$(realpath -m "${2:-${OUT:-/tmp/gpu-check}}")
mkdir -p "$out"
log=$out/gpu_check.log results=$out/results.jsonl
work=/tmp/gpu-check-work
mkdir -p "$work"
export BARLOW_CACHE=$work/cache   # datasets and the kernel cache; empty on a fresh machine
started=$(date +%s)

say() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$log"; }

# run_stage NAME LIMIT SHELL-CODE: the code (which may call the functions below) under `timeout`,
# the JSON lines of its stdout into results.jsonl, everything into the log; skipped when fewer
# than 20 s of the budget would be left for it.
run_stage() {
  local name=$1 limit=$2 code=$3
  local left=$(( budget - ($(date +%s) - started) ))
  if [ "$left" -lt 20 ]; then say "== $name: SKIPPED, ${left}s of the budget left"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "== $name (at most ${limit}s): $code"
  local t0=$(date +%s) rc
  timeout -k 10 "$limit" bash -c "$code" > "$work/$name.out" 2>> "$log"
  rc=$?
  cat "$work/$name.out" >> "$log"
  grep '^{' "$work/$name.out" | sed "s/^{/{\"stage\":\"$name\",/" >> "$results"
  case $rc in
    0) say "== $name: ok in $(( $(date +%s) - t0 ))s" ;;
    124|137) say "== $name: TIMED OUT after ${limit}s" ;;
    *) say "== $name: FAILED (exit $rc) in $(( $(date +%s) - t0 ))s" ;;
  esac
}

if [ $dry = 1 ]; then
  bin=target/release/barlow tch_bin=${BARLOW_TCH:-none} torch_lib=${BARLOW_TCH_LIB:-}
  python=python3; [ -x .venv-ref/bin/python ] && python=.venv-ref/bin/python
  # The shapes of the two rows, made tiny; the stems stay (≤ 64 px CIFAR, above it ImageNet).
  row1="--width 8 --projector 64-64 --batch 8 --size 16"
  row2="--arch resnet50 --width 8 --projector 64-64 --batch 2 --size 96"
  torch1="--width 8 --batch 8 --size 16 --projector 64-64" torch2="--arch resnet50 --width 8 --batch 2 --size 96 --projector 64-64"
  # No kNN monitor: encoding 60,000 images takes minutes on a CPU.
  train_set="--set model.width=8 --set model.projector=[64,64] --set optim.batch_size=64 --set data.limit=2048 --set train.knn_every=0"
  steps=2 warm=30 train_secs=60
else
  bin=$work/barlow python=python3 tch_bin=$work/barlow-tch torch_lib=""
  row1="--batch 256 --size 32 --projector 2048-2048-2048"
  row2="--arch resnet50 --batch 64 --size 224 --projector 8192-8192-8192"
  torch1=$row1 torch2=$row2 train_set=""
  steps=10 warm=90 train_secs=100
fi
# Row 1 at width 4, N=2: next to no arithmetic, so what is left is each framework's cost per
# operation (dispatch, launch, autodiff bookkeeping), which bounds how fast a small step can be.
tiny="--width 4 --batch 2 --size 8 --projector 16-16-16"

setup() {
  set -e
  if [ $dry = 0 ]; then
    for f in "$kit"/barlow-gpu.xz "$kit"/barlow-gpu.gz; do
      [ -f "$f" ] || continue
      case $f in *.xz) xz -dc "$f" > "$bin" ;; *.gz) gzip -dc "$f" > "$bin" ;; esac
    done
    chmod +x "$bin"
    if [ -f "$kit/barlow-tch.xz" ]; then
      # Only for the PyTorch it was built against: LibTorch's C++ interface changes between versions.
      want=$(cat "$kit/barlow-tch.torch") have=$("$python" -c 'import torch; print(torch.__version__.split("+")[0])')
      if [ "${want%.*}" = "${have%.*}" ]; then
        xz -dc "$kit/barlow-tch.xz" > "$tch_bin" && chmod +x "$tch_bin"
      else
        echo "barlow-tch was built against PyTorch $want; this machine has $have: no tch stages"
      fi
    fi
    # The Vulkan loader (wgpu needs it); unpacked into / as the device notes say.
    if ! ldconfig -p | grep -q libvulkan.so.1 && ls "$kit"/debs/*.deb > /dev/null 2>&1; then
      for f in "$kit"/debs/*.deb; do dpkg -x "$f" /; done
      ldconfig
    fi
    nvidia-smi || true
  fi
  "$bin" --version
  ldd "$bin" || true
  # A dry run without a kit takes the whole copy from ../shared.
  cifar=$kit/cifar10-jpeg.tar.gz
  [ $dry = 1 ] && [ ! -f "$cifar" ] && cifar=${SHARED:-../shared}/datasets/cifar10-jpeg.tar.gz
  if [ -f "$cifar" ]; then
    rm -rf "$work/data" && mkdir -p "$work/data" && tar xzf "$cifar" -C "$work/data"
    echo "CIFAR-10 JPEG: $(find "$work/data/cifar10" -name '*.jpg' | wc -l) images"
  fi
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
}
# The NVIDIA driver's Vulkan ICD where the device notes found it.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f $icd ] && export VK_DRIVER_FILES=$icd
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f $egl ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl

# The PyTorch libraries barlow-tch loads: this machine's own.
[ -z "$torch_lib" ] && torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)

backend() {
  case $1 in
    tch) [ $dry = 1 ] && echo tch || echo tch-cuda ;;
    *) [ $dry = 1 ] && echo flex || echo "$1" ;;
  esac
}
# barlow for backend $1: the tch stages run barlow-tch with this machine's LibTorch. With `limit`
# set, under `timeout -s INT $limit`, whose INT then reaches barlow itself (not a shell).
barlow() {
  local b=$1 exe=$bin libs=${LD_LIBRARY_PATH:-}; shift
  if [ "$b" = tch ]; then
    [ -x "$tch_bin" ] || { echo "no barlow-tch for this machine's PyTorch (see setup)" >&2; return 1; }
    exe=$tch_bin libs=$torch_lib${libs:+:$libs}
  fi
  ${limit:+timeout -s INT "$limit"} env LD_LIBRARY_PATH="$libs" "$exe" "$@"
}
bench() { barlow "$1" bench step --backend "$(backend "$1")" $2 --steps ${3:-$steps} --warmup-secs $warm --json; }
check() {
  # Each stem once: ResNet-18 CIFAR as row 1 (smaller batch), ResNet-50 ImageNet at 96 px.
  barlow "$1" bench check --backend "$(backend "$1")" --batch 16 --json &&
  barlow "$1" bench check --backend "$(backend "$1")" --arch resnet50 --batch 8 --size 96 --projector 1024-1024-1024 --json
}
train() {
  # About two minutes of the cifar10 preset on the JPEG copy; the time limit ends it.
  rm -rf "$work/run"
  limit=$train_secs barlow "$1" train --config cifar10 --set data.dataset=folder --data "$work/data/cifar10" \
    --set train.knn_every=1 $train_set --backend "$(backend "$1")" --out "$work/run"
  local rc=$?
  [ -f "$work/run/metrics.jsonl" ] && cp "$work/run/metrics.jsonl" "$out/train_metrics.jsonl"
  # Ended by the time limit is the plan; anything else is a failure.
  [ $rc = 0 ] || [ $rc = 124 ] || [ $rc = 130 ]
}
profile() {
  # Three steps of each row under PyTorch's profiler, barlow's (tch) and PyTorch's own, f32 and
  # bf16: where each spends its GPU time, kernel by kernel (scripts/trace_summary.py). The traces
  # come back gzipped in $out/traces.
  local dir=$work/traces p row args targs
  rm -rf "$dir" && mkdir -p "$out/traces" || return 1
  for row in 1 2; do
    args=row$row targs=torch$row
    for p in f32 bf16; do
      bench_args="${!args} --precision $p --steps 2 --warmup-secs 20 --profile $dir/row$row --profile-steps 3"
      barlow tch bench step --backend "$(backend tch)" $bench_args > /dev/null || return 1
    done
    "$python" scripts/torch_step.py ${!targs} --steps 2 --precision fp32,bf16 --profile "$dir/row$row" \
      --profile-steps 3 > /dev/null || return 1
    "$python" scripts/trace_summary.py --steps 3 "$dir/row$row"/*.json | sed "s|^### |### row $row: |"
    for f in "$dir/row$row"/*.json; do gzip -c "$f" > "$out/traces/row$row-$(basename "$f").gz"; done
  done
}
export -f setup backend barlow bench check train profile
export dry kit work bin tch_bin torch_lib python out steps warm train_secs train_set row1 row2 torch1 torch2 tiny

say "gpu_check: kit $kit, out $out, budget ${budget}s, stages: $stages"
for s in $stages; do
  b=${s#*-}
  case $s in
    setup) run_stage setup 120 setup ;;
    check-*) run_stage "$s" 240 "check $b" ;;
    tf32-torch) run_stage "$s" 120 "$python scripts/torch_tf32_check.py --json" ;;
    row1-torch) run_stage "$s" 90 "$python scripts/torch_step.py $torch1 --steps $steps --json" ;;
    row2-torch) run_stage "$s" 90 "$python scripts/torch_step.py $torch2 --steps $steps --json" ;;
    tiny-torch) run_stage "$s" 90 "$python scripts/torch_step.py $tiny --steps 30 --precision fp32,bf16 --json" ;;
    tiny-*) run_stage "$s" 90 "bench $b \"\$tiny\" 30 && bench $b \"\$tiny --precision bf16\" 30" ;;
    row1bf-*) run_stage "$s" $(( warm + 60 )) "bench $b \"\$row1 --precision bf16\"" ;;
    row2bf-*) run_stage "$s" $(( warm + 60 )) "bench $b \"\$row2 --precision bf16\"" ;;
    row1-*) run_stage "$s" $(( warm + 60 )) "bench $b \"\$row1\"" ;;
    row2-*) run_stage "$s" $(( warm + 60 )) "bench $b \"\$row2\"" ;;
    train-*) run_stage "$s" $(( train_secs + 30 )) "train $b" ;;
    profile-tch) run_stage "$s" 240 profile ;;
    *) say "unknown stage $s" ;;
  esac
done
# The table, from what the stages measured (whatever they got to).
"$python" scripts/gpu_summary.py "$results" "$out/train_metrics.jsonl" 2>&1 | tee "$out/summary.md" >> "$log"
say "gpu_check: done; $out/summary.md"
