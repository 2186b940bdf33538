#!/usr/bin/env bash
# docs/bottleneck.md, "Where the target becomes linearly readable": layer-wise linear probes before and after
# fine-tuning, on two targets:
#   1. hymenoptera with efficientnet_lite0 (ImageNet weights), `full` fine-tuning with the defaults;
#   2. the CIFAR near target (dog, frog, horse, ship, truck) fine-tuned with `full` from the pre-training study's
#      source model: the first seed's run of benchmarks/bottleneck_study.sh (its cifar_near grid).
# Usage: bash benchmarks/probe_curves.sh BOTTLENECK_STUDY_OUT [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=${1:?usage: bash benchmarks/probe_curves.sh BOTTLENECK_STUDY_OUT [OUT_DIR]}
OUT=${2:-/tmp/transferlab_probe_curves}
TL=.venv/bin/transferlab
mkdir -p "$OUT"
if [ ! -f "$OUT/hymenoptera_full/metrics.json" ]; then
  $TL finetune --model efficientnet_lite0 --data ../shared/data/hymenoptera --strategy full \
    --out "$OUT/hymenoptera_full" $([ -e "$OUT/hymenoptera_full/config.json" ] && echo --resume)
fi
CIFAR_RUN=$(ls -d "$STUDY"/cifar_near/grids/epoch_*/runs/full/0 | head -1)
for name in hymenoptera cifar_near; do
  run="$OUT/hymenoptera_full"; [ "$name" = cifar_near ] && run="$CIFAR_RUN"
  t0=$SECONDS
  $TL diagnose probe --run "$run" --plot "$OUT/probe_$name.png" --json > "$OUT/probe_$name.json"
  echo "$name: $((SECONDS - t0)) s"
  .venv/bin/python - "$OUT/probe_$name.json" <<'PY'
import json
import sys

r = json.load(open(sys.argv[1]))
entries = r["entries"]
labels = list(entries)
print(f"{r['source']} on {r['data']} ({r['examples']}); majority baseline {r['majority_baseline']}")
print("| depth group | dim | " + " | ".join(f"{e} train | {e} val" for e in labels) + " |")
print("|---|---|" + "---|---|" * len(labels))
for i, g in enumerate(entries[labels[0]]["groups"]):
    cells = [f"{entries[e]['groups'][i]['train_accuracy']:.3f} | {entries[e]['groups'][i]['val_accuracy']:.3f}"
             for e in labels]
    print(f"| {g['name']} | {g['dim']} | " + " | ".join(cells) + " |")
PY
done
