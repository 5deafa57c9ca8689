#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh needs on a GPU machine without Rust or internet into one
# git-ignored folder (default gpu-kit/), to be carried there:
#   barlow-gpu.xz        the `--features cuda,wgpu` binary (flex included), stripped, xz-compressed
#   debs/*.deb           the Vulkan loader and GL dispatch packages wgpu needs (Debian, amd64)
#   cifar10-jpeg.tar.gz  CIFAR-10 JPEGs for the training stage (20,000 train, 10,000 test images)
#   barlow-tch.xz        the `--features tch` binary, built against the GPU machine's PyTorch
#                        ($TORCH_VERSION, default 2.11.0; barlow-tch.torch names it), whose
#                        libraries it loads there: tch 0.22 is written for 2.9, and builds and
#                        passes `bench check` against 2.11 with LIBTORCH_BYPASS_VERSION_CHECK
# Usage (repository root, with ../shared beside it): scripts/gpu_kit.sh [KIT]
# On a fresh 2-core machine the cuda build takes about 22 minutes and the tch one about 15
# (2026-12-04), later only what changed; each has its own target directory (target/cuda,
# target/tch-VERSION), because the CUDA toolchain settings below would rebuild everything in target/.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${1:-gpu-kit}
shared=${SHARED:-../shared}
mkdir -p "$kit/debs"

# burn's `cuda` downloads LLVM at build time; this points it at Debian's LLVM 22 instead. The
# tool touches tracel's install marker, which a cubecl build script watches: its old time is put
# back, or every run would rebuild from the cubecl crates up (≈ 35 min).
declare -A marker_time
for m in "$HOME"/.local/share/tracel/tracel-llvm-*/.tracel-llvm-installed; do
  [ -e "$m" ] && marker_time[$m]=$(stat -c %Y "$m")
done
eval "$("$shared/tools/offline-llvm-for-cuda")"
for m in "${!marker_time[@]}"; do touch -d "@${marker_time[$m]}" "$m"; done
cargo build --release --features cuda,wgpu --target-dir target/cuda
strip -o "$kit/barlow-gpu" target/cuda/release/barlow
xz -T0 -9 -f "$kit/barlow-gpu"

# LibTorch from the PyPI wheel of the GPU machine's PyTorch: its headers to build against, its
# libraries to link (there, the binary loads that machine's own copy).
torch_version=${TORCH_VERSION:-2.11.0}
libtorch=cache/libtorch-$torch_version
if [ ! -d "$libtorch/torch/lib" ]; then
  wheels=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$wheels" "torch==$torch_version"
  mkdir -p "$libtorch"
  unzip -q -o "$wheels"/torch-*.whl 'torch/include/*' 'torch/lib/*' 'torch/share/*' -d "$libtorch"
  rm -rf "$wheels"
fi
# Without the LLVM link fix's RUSTFLAGS, which tch does not need (a change of RUSTFLAGS rebuilds
# everything in its target directory).
env -u RUSTFLAGS LIBTORCH=$PWD/$libtorch/torch LIBTORCH_BYPASS_VERSION_CHECK=1 LIBTORCH_CXX11_ABI=1 \
  cargo build --release --features tch --target-dir "target/tch-$torch_version"
strip -o "$kit/barlow-tch" "target/tch-$torch_version/release/barlow"
xz -T0 -9 -f "$kit/barlow-tch"
echo "$torch_version" > "$kit/barlow-tch.torch"

# As the device notes say: amd64 package lists of their own, then the loader packages.
lists=/tmp/amd64-lists
mkdir -p "$lists/partial"
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
apt-get $o update -qq
(cd "$kit/debs" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

# The training stage's data: CIFAR-10's test split and the first 2,000 training images of each
# class. The whole JPEG copy (19.6 MB) beside the binaries (≈ 48 MB) would not fit in a device
# call's 64 MiB with the working tree.
tmp=$(mktemp -d)
tar xzf "$shared/datasets/cifar10-jpeg.tar.gz" -C "$tmp"
for class in "$tmp"/cifar10/train/*/; do
  find "$class" -name '*.jpg' | sort | tail -n +2001 | xargs -r rm -f
done
tar czf "$kit/cifar10-jpeg.tar.gz" -C "$tmp" cifar10
rm -rf "$tmp"
ls -l "$kit" "$kit/debs"
total=$(du -sbL "$kit" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "$kit: $(( total / 1024 / 1024 )) MiB, working tree $(( tree / 1024 / 1024 )) MiB (a device call carries at most 64 MiB)"
[ $(( total + tree )) -lt $(( 63 * 1024 * 1024 )) ] || { echo "too large to carry beside the working tree" >&2; exit 1; }
