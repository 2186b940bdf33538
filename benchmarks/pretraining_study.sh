#!/usr/bin/env bash
# docs/pretraining.md: how the length of pre-training changes what transfers.
#   1. pretrain resnet10_cifar from random weights on five CIFAR-10 classes (airplane, automobile, bird, cat, deer:
#      their 25,000 training images, validation = 10% of them, test = their 5,000 test images), with the training
#      augmentation (random resized crop, flip), a checkpoint every 2 epochs;
#   2. the transfer curve to the near target (dog, frog, horse, ship, truck: 100 training images per class,
#      validation 100 per class from train/, scored on their 5,000 test images), with the source's forgetting
#      measured on its 5,000 test images;
#   3. the transfer curve to the distant target: scikit-learn's digits (8x8 grey, scaled to 32 px by the data
#      pipeline), written as an image folder with a held-out test split (40% of each class), so that both curves
#      are scored on data that no selection saw;
#   4. ewc and lwf on the near target from the best (source validation) and the last checkpoint, with the source's
#      forgetting (step 2 measures it for the other strategies at every checkpoint).
# Usage: bash benchmarks/pretraining_study.sh [OUT_DIR]   (one step after the other; `time` of each is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_pretraining_study}
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
data_set CIFAR cifar10
TL=.venv/bin/transferlab
PY=.venv/bin/python
SOURCE=airplane,automobile,bird,cat,deer
NEAR=dog,frog,horse,ship,truck
SOURCE_OPTS=${SOURCE_OPTS:-"--augment"}
EPOCHS=${EPOCHS:-16}
SEEDS=${SEEDS:-3}
STRATEGIES=${STRATEGIES:-linear_probe,freeze:k=3,full}
TARGET_OPTS=${TARGET_OPTS:-"--epochs 5 --batch-size 32"}
mkdir -p "$OUT"

step() { local name=$1; shift; echo "== $name"; local t0=$SECONDS; "$@" > "$OUT/$name.log" 2>&1 \
  || { echo "$name FAILED (see $OUT/$name.log)"; tail -3 "$OUT/$name.log"; exit 1; }
  echo "$((SECONDS - t0))" > "$OUT/$name.seconds"; echo "   $name: $((SECONDS - t0)) s"; }

resume_flag() { [ -e "$1" ] && echo --resume || true; }

step pretrain $TL pretrain --data $CIFAR --classes $SOURCE $SOURCE_OPTS --val-fraction 0.1 \
  --epochs "$EPOCHS" --checkpoint-every 2 --out "$OUT/source" $(resume_flag "$OUT/source/config.json")

step near_curve $TL transfer-curve --pretrained "$OUT/source" --data $CIFAR --classes $NEAR --max-train 500 \
  --max-val 500 --strategies "$STRATEGIES" --seeds "$SEEDS" $TARGET_OPTS --source-data $CIFAR \
  --out "$OUT/near" $(resume_flag "$OUT/near/curve.json")

[ -d "$OUT/digits_folder/test" ] || "$PY" benchmarks/_digits_folder.py "$OUT/digits_folder"

step distant_curve $TL transfer-curve --pretrained "$OUT/source" --data "$OUT/digits_folder" --strategies \
  "$STRATEGIES" --seeds "$SEEDS" $TARGET_OPTS --out "$OUT/distant" $(resume_flag "$OUT/distant/curve.json")

step forgetting $TL transfer-curve --pretrained "$OUT/source" --checkpoints best,last --data $CIFAR --classes $NEAR \
  --max-train 500 --max-val 500 --strategies ewc,lwf --seeds "$SEEDS" $TARGET_OPTS --source-data $CIFAR \
  --out "$OUT/forgetting" $(resume_flag "$OUT/forgetting/curve.json")
"$PY" benchmarks/pretraining_summary.py "$OUT"
