#!/usr/bin/env bash
# What the early layers pass and where the target becomes readable, before and after fine-tuning:
#   - docs/frequency.md: the frequency response (kernel spectra, grating gains per depth group) of
#     efficientnet_lite0 pre-trained, fine-tuned on hymenoptera (1. below) and at random init;
#   - docs/bottleneck.md: layer-wise linear probes on two targets:
#   1. hymenoptera with efficientnet_lite0 (ImageNet weights), `full` fine-tuning with the defaults;
#   2. the CIFAR near target (dog, frog, horse, ship, truck) fine-tuned with `full` from the pre-training study's
#      source model: the first seed's run of benchmarks/bottleneck_study.sh (its cifar_near grid).
# Usage: bash benchmarks/early_layers.sh BOTTLENECK_STUDY_OUT [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=${1:?usage: bash benchmarks/early_layers.sh BOTTLENECK_STUDY_OUT [OUT_DIR]}
OUT=${2:-/tmp/transferlab_early_layers}
TL=.venv/bin/transferlab
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
data_set HYM hymenoptera
mkdir -p "$OUT"
if [ ! -f "$OUT/hymenoptera_full/metrics.json" ]; then
  $TL finetune --model efficientnet_lite0 --data "$HYM" --strategy full \
    --out "$OUT/hymenoptera_full" $([ -e "$OUT/hymenoptera_full/config.json" ] && echo --resume)
fi
t0=$SECONDS
$TL diagnose frequency --run "$OUT/hymenoptera_full" --plot "$OUT/frequency_hymenoptera.png" --json \
  > "$OUT/frequency_hymenoptera.json"
echo "frequency: $((SECONDS - t0)) s"
.venv/bin/python - "$OUT/frequency_hymenoptera.json" <<'PY'
import json
import sys

r = json.load(open(sys.argv[1]))
entries = {r["label"]: {"groups": r["groups"], "kernels": r["kernels"]}, **r["entries"]}
print("| model | stem kernels low / middle / high (white: " +
      " / ".join(f"{v:.3f}" for v in r["kernels"]["bands_white"].values()) + ") |")
print("|---|---|")
for label, e in entries.items():
    print(f"| {label} | " + " / ".join(f"{v:.3f}" for v in e["kernels"]["bands"].values()) + " |")
freqs = r["groups"][next(iter(r["groups"]))]["frequency"]
picks = [i for i, f in enumerate(freqs) if f in (freqs[0], freqs[len(freqs) // 4], freqs[len(freqs) // 2], freqs[-1])]
print("\n| depth group | model | " + " | ".join(f"gain at {freqs[i]:.3f}" for i in picks) + " |")
print("|---|---|" + "---|" * len(picks))
for group in r["groups"]:
    for label, e in entries.items():
        g = e["groups"].get(group)
        if g:
            print(f"| {group} | {label} | " + " | ".join(f"{g['gain'][i]:.3g}" for i in picks) + " |")
PY
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
