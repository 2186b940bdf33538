#!/usr/bin/env bash
# Merging task modules: three CIFAR-10 tasks (disjoint 3-class subsets) on one efficientnet_lite0 base, each
# trained with `lora`, then merged by every `modules merge` method; each task's test accuracy from its own
# module, from every merged model, and from its own `full` fine-tune (a single-task ceiling).
# Usage: bash benchmarks/peft_merge_study.sh [OUT_DIR]      (prints one Markdown table at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/_data.sh
data_set CIFAR cifar10
OUT=${1:-/tmp/transferlab_peft_merge}
TL=.venv/bin/transferlab
mkdir -p "$OUT"
declare -A CLASSES=([vehicles]=airplane,automobile,ship [animals]=cat,deer,dog [mixed]=bird,frog,truck)
TASKS="vehicles animals mixed"
OPTS="--model efficientnet_lite0 --data $CIFAR --image-size 64 --epochs 3 --max-train 900 --max-val 300"
for task in $TASKS; do
  for strategy in lora full; do
    dir="$OUT/$strategy/$task"
    mkdir -p "$OUT/$strategy"
    [ -f "$dir/metrics.json" ] || $TL finetune $OPTS --classes "${CLASSES[$task]}" --strategy $strategy \
        --out "$dir" --overwrite > "$dir.log" 2>&1 || { echo "$dir FAILED"; tail -3 "$dir.log"; exit 1; }
  done
done
METHODS="linear task_arithmetic ties dare_linear dare_ties svd"
for method in $METHODS; do
  [ -f "$OUT/merged_$method/multitask.json" ] || $TL modules merge $(for t in $TASKS; do echo "$OUT/lora/$t"; done) \
      --method $method --out "$OUT/merged_$method" > "$OUT/merged_$method.log" 2>&1
done
accuracy() {  # RUN [--task T] -> test accuracy (evaluate prints JSON)
  $TL evaluate --split test --run "$@" 2>/dev/null | .venv/bin/python -c "import json,sys; print(f\"{json.load(sys.stdin)['accuracy']:.4f}\")"
}
echo "| task (classes) | own lora module | $(echo $METHODS | sed 's/ / | /g') | own full |"
echo "|---|---|$(for m in $METHODS; do printf -- '---|'; done)---|"
for task in $TASKS; do
  row="| $task (${CLASSES[$task]}) | $(accuracy $OUT/lora/$task)"
  for method in $METHODS; do row="$row | $(accuracy $OUT/merged_$method --task $task)"; done
  echo "$row | $(accuracy $OUT/full/$task) |"
done
