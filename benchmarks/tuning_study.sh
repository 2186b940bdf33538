#!/usr/bin/env bash
# docs/compare.md, "Tuning measured": five strategies at their defaults against the same five after an equal
# tuning budget (`compare --tune`), on hymenoptera with efficientnet_lite0 and on sst2_clean with minilm_l6. Each
# strategy gets TRIALS trials (Optuna TPE with the median pruner, selected on validation), then its chosen setting
# runs over SEEDS seeds and is reported on test beside its default setting; no from-scratch baseline
# (`--no-scratch`: the question is the strategies' ranking). Hymenoptera has no test split: a quarter of its
# training images is held out as one (`--test-fraction 0.25`, stratified, seeded), never selected on.
# Run it alone (two 1-thread workers). Usage: bash benchmarks/tuning_study.sh [OUT_DIR] [hymenoptera|sst2|both]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_tuning_study}
WHICH=${2:-both}
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
TL=.venv/bin/transferlab
STRATEGIES=${STRATEGIES:-linear_probe,l2sp,lp_ft,full,lora}
TRIALS=${TRIALS:-6}
SEEDS=${SEEDS:-3}
mkdir -p "$OUT"
resume_flag() { [ -e "$1/grid.json" ] && echo --resume || true; }
timed() { local name=$1; shift; local t0=$SECONDS; "$@" > "$OUT/$name.log" 2>&1 \
  || { echo "$name FAILED (see $OUT/$name.log)"; tail -3 "$OUT/$name.log"; exit 1; }
  echo "$name: $((SECONDS - t0)) s" | tee "$OUT/$name.seconds"; }

if [ "$WHICH" != sst2 ]; then
  data_set HYM hymenoptera
  timed hymenoptera $TL compare --model efficientnet_lite0 --data "$HYM" --strategies "$STRATEGIES" --no-scratch \
    --seeds "$SEEDS" --tune "$TRIALS" --epochs 3 --image-size 128 --test-fraction 0.25 --jobs 2 \
    --out "$OUT/hymenoptera" $(resume_flag "$OUT/hymenoptera")
fi
if [ "$WHICH" != hymenoptera ]; then
  data_set SST sst2_clean
  timed sst2_clean $TL compare --model minilm_l6 --data "$SST" --strategies "$STRATEGIES" --no-scratch \
    --seeds "$SEEDS" --tune "$TRIALS" --epochs 2 --max-train 500 --max-val 500 --max-length 48 --jobs 2 \
    --out "$OUT/sst2_clean" $(resume_flag "$OUT/sst2_clean")
fi
