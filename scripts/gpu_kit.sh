#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh needs on a GPU machine without Rust or internet into one
# git-ignored folder (default gpu-kit/), to be carried there:
#   barlow-gpu.xz        the `--features cuda,wgpu` binary (flex included), stripped, xz-compressed
#   debs/*.deb           the Vulkan loader and GL dispatch packages wgpu needs (Debian, amd64)
#   cifar10-jpeg.tar.gz  CIFAR-10 JPEGs for the training stage (25,000 train, 10,000 test images)
# Usage (repository root, with ../shared beside it): scripts/gpu_kit.sh [KIT]
# The build takes about 15 minutes on 2 cores the first time; it has its own target directory
# (target/cuda), because the CUDA toolchain settings below would rebuild everything in target/.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${1:-gpu-kit}
shared=${SHARED:-../shared}
mkdir -p "$kit/debs"

# burn's `cuda` downloads LLVM at build time; this points it at Debian's LLVM 22 instead.
eval "$("$shared/tools/offline-llvm-for-cuda")"
cargo build --release --features cuda,wgpu --target-dir target/cuda
strip -o "$kit/barlow-gpu" target/cuda/release/barlow
xz -T0 -9 -f "$kit/barlow-gpu"

# As the device notes say: amd64 package lists of their own, then the loader packages.
lists=/tmp/amd64-lists
mkdir -p "$lists/partial"
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
apt-get $o update -qq
(cd "$kit/debs" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

# The training stage's data: CIFAR-10's test split and the first 2,500 training images of each
# class. The whole JPEG copy (19.6 MB) beside the binary (≈ 38 MB) would leave almost nothing
# of a device call's 64 MiB for the working tree.
tmp=$(mktemp -d)
tar xzf "$shared/datasets/cifar10-jpeg.tar.gz" -C "$tmp"
for class in "$tmp"/cifar10/train/*/; do
  find "$class" -name '*.jpg' | sort | tail -n +2501 | xargs -r rm -f
done
tar czf "$kit/cifar10-jpeg.tar.gz" -C "$tmp" cifar10
rm -rf "$tmp"
ls -l "$kit" "$kit/debs"
total=$(du -sbL "$kit" | cut -f1)
echo "$kit: $(( total / 1024 / 1024 )) MiB (a device call carries at most 64 MiB with the working tree)"
[ "$total" -lt $(( 58 * 1024 * 1024 )) ] || { echo "too large to carry beside the working tree" >&2; exit 1; }
