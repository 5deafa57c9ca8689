#!/usr/bin/env bash
# Checkpoints of today's six methods, tiny (a width-1 ResNet-18, 8-wide heads, one epoch of 64
# images), and each encoder's features of the embedded sample's test split: the fixtures with
# which tests/state.rs checks that checkpoints written before a change still load, resume and
# give the same features after it. Run from the repository root with a release build:
#   cargo build --release && scripts/make_checkpoint_fixtures.sh
set -euo pipefail
out=tests/fixtures/checkpoints
bin=target/release/barlow
tiny=(--set data.limit=64 --set data.size=16 --set model.width=1 --set "model.projector=[8, 8]"
      --set optim.batch_size=32 --set optim.epochs=1 --set optim.warmup_epochs=0 --set train.knn_every=0)
for method in barlow simclr moco byol simsiam vicreg; do
  config=cifar10
  extra=()
  case $method in
    barlow) ;;
    moco) config=moco-cifar10; extra=(--set model.queue=64) ;;
    byol|simsiam) config=$method-cifar10; extra=(--set "model.predictor=[4, 8]") ;;
    *) config=$method-cifar10 ;;
  esac
  run=$(mktemp -d)
  $bin train --config $config --out "$run" --set data.dataset=fashion-mnist-sample "${tiny[@]}" "${extra[@]}"
  mkdir -p $out/$method
  cp "$run/checkpoint.bin" $out/$method/checkpoint.bin
  $bin embed -k "$run" --split test --out $out/$method/features.npy
  rm -f $out/$method/features.npy.ids.tsv
  rm -rf "$run"
done
