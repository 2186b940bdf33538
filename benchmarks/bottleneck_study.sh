#!/usr/bin/env bash
# docs/bottleneck.md: the selective penalty on latent dimensions (ib_select) and the information-bottleneck head
# (--head vib), measured against the usual regularisers.
#   1. CIFAR: the pre-training study's source model (benchmarks/pretraining_study.sh: resnet10_cifar pre-trained
#      on airplane, automobile, bird, cat, deer; its best checkpoint by source validation accuracy) fine-tuned on
#      the near target (dog, frog, horse, ship, truck: 100 training images per class, validation 100 per class from
#      train/, scored on their 5,000 test images) with full, l2sp, ewc, lwf and ib_select at lam 1 and 10, 3 seeds,
#      with the source task's forgetting measured on its 5,000 real test images;
#   2. SST-2: minilm_l6 on $TRANSFERLAB_DATA/sst2_clean (validation sentences share nothing with training, so
#      selection on them predicts the test), 1,000 training phrases, 3 epochs (the CPU budget of one session), full and ib_select with the linear head and
#      full with the vib head, 5 seeds each; scored on the 872 test sentences.
# Usage: bash benchmarks/bottleneck_study.sh SOURCE_RUN [OUT_DIR]
#   SOURCE_RUN: the `source` folder of a pre-training study (e.g. /tmp/transferlab_pretraining_study/source).
# Each step resumes where it stopped when run again; `time` of each is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE_RUN=${1:?usage: bash benchmarks/bottleneck_study.sh SOURCE_RUN [OUT_DIR]}
OUT=${2:-/tmp/transferlab_bottleneck_study}
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
data_set CIFAR cifar10
data_set SST2 sst2_clean
TL=.venv/bin/transferlab
SEEDS_CIFAR=${SEEDS_CIFAR:-3}
SEEDS_SST2=${SEEDS_SST2:-5}
mkdir -p "$OUT"

step() { local name=$1; shift; echo "== $name"; local t0=$SECONDS; "$@" > "$OUT/$name.log" 2>&1 \
  || { echo "$name FAILED (see $OUT/$name.log)"; tail -3 "$OUT/$name.log"; exit 1; }
  echo "$((SECONDS - t0))" > "$OUT/$name.seconds"; echo "   $name: $((SECONDS - t0)) s"; }

resume_flag() { [ -e "$1" ] && echo --resume || true; }

step cifar_near $TL transfer-curve --pretrained "$SOURCE_RUN" --checkpoints best --data $CIFAR \
  --classes dog,frog,horse,ship,truck --max-train 500 --max-val 500 \
  --strategies full,l2sp,ewc,lwf,ib_select,ib_select:lam=10 --seeds "$SEEDS_CIFAR" --epochs 5 --batch-size 32 \
  --source-data $CIFAR --out "$OUT/cifar_near" $(resume_flag "$OUT/cifar_near/curve.json")

step sst2_linear $TL compare --model minilm_l6 --data $SST2 --strategies full,ib_select --seeds "$SEEDS_SST2" \
  --no-scratch --max-train 1000 --epochs 3 --max-length 64 --out "$OUT/sst2_linear" $(resume_flag "$OUT/sst2_linear/results.json")

step sst2_vib $TL compare --model minilm_l6 --data $SST2 --strategies full --head vib --seeds "$SEEDS_SST2" \
  --no-scratch --max-train 1000 --epochs 3 --max-length 64 --out "$OUT/sst2_vib" $(resume_flag "$OUT/sst2_vib/results.json")

.venv/bin/python benchmarks/bottleneck_summary.py "$OUT"
