#!/usr/bin/env bash
# BatchNorm under covariate shift on hymenoptera (efficientnet_lite0): accuracy on corrupted validation
# images, the BatchNorm shift they cause, and what AdaBN (`transferlab adapt-bn`) recovers.
#
#   nice -n 10 bash benchmarks/bn_shift_hymenoptera.sh [OUT=/tmp/bn_shift_hym]
#
# 1. run: linear probe on clean images; the backbone keeps ImageNet's BatchNorm statistics.
# 2. run_cleanbn: the "fine-tuned on clean hymenoptera" model whose BatchNorm statistics are clean
#    hymenoptera's: run's statistics re-estimated on the clean training images (adapt-bn), exported as
#    --weights, and a new linear probe trained on top (AdaBN can only restore the statistics a head was
#    trained with; see docs/diagnostics.md).
# 3. per corruption: evaluate run_cleanbn, bn-shift, adapt-bn on the corrupted training images (labels
#    unused), evaluate the adapted run on the corrupted validation images.
# Every step is skipped when its output exists, so an interrupted run continues. Corrupted copies go to
# OUT (never into the repository). Prints a Markdown table; OUT/results.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TL="${TL:-$ROOT/.venv/bin/transferlab}"
PY="${PY:-$ROOT/.venv/bin/python}"
source "$ROOT/benchmarks/_data.sh"
[ -n "${DATA:-}" ] || data_set DATA hymenoptera  # $DATA, else $TRANSFERLAB_DATA/hymenoptera (docs/data.md)
OUT="${1:-/tmp/bn_shift_hym}"
CASES="${CASES:-clean gaussian_noise:1 gaussian_noise:3 gaussian_noise:5 contrast:4}"
mkdir -p "$OUT"

[ -f "$OUT/run/metrics.json" ] || "$TL" finetune --model efficientnet_lite0 --data "$DATA" \
  --strategy linear_probe --epochs 3 --lr 1e-2 --seed 0 --out "$OUT/run" --overwrite > "$OUT/finetune.json"
[ -f "$OUT/adabn_clean/adabn.json" ] || "$TL" adapt-bn --run "$OUT/run" --data "$DATA" --out "$OUT/adabn_clean" \
  --overwrite > /dev/null
[ -f "$OUT/clean_bn.safetensors" ] || "$TL" export-source --run "$OUT/adabn_clean" \
  --out "$OUT/clean_bn.safetensors" > /dev/null
[ -f "$OUT/run_cleanbn/metrics.json" ] || "$TL" finetune --model efficientnet_lite0 \
  --weights "$OUT/clean_bn.safetensors" --data "$DATA" --strategy linear_probe --epochs 2 --lr 1e-2 --seed 0 \
  --out "$OUT/run_cleanbn" --overwrite > "$OUT/finetune_cleanbn.json"

for case in $CASES; do
  name="${case/:/_}"
  if [ "$case" = clean ]; then
    target="$DATA"
  else
    target="$OUT/data/$name"
    [ -d "$target" ] || "$TL" data corrupt --data "$DATA" --kind "${case%%:*}" --severity "${case##*:}" \
      --seed 0 --out "$target" > /dev/null
  fi
  p="$OUT/cleanbn_$name"
  [ -s "$p.eval.json" ] || "$TL" evaluate --run "$OUT/run_cleanbn" --data "$target" > "$p.eval.json"
  [ -s "$p.bn.json" ] || "$TL" diagnose bn-shift --run "$OUT/run_cleanbn" --data "$target" --json \
    --plot "$p.bn.png" > "$p.bn.json"
  [ -f "$OUT/adabn_cleanbn_$name/adabn.json" ] || "$TL" adapt-bn --run "$OUT/run_cleanbn" --data "$target" \
    --out "$OUT/adabn_cleanbn_$name" --overwrite > /dev/null
  [ -s "$p.adabn.eval.json" ] || "$TL" evaluate --run "$OUT/adabn_cleanbn_$name" > "$p.adabn.eval.json"
  echo "done: $case" >&2
done

"$PY" - "$OUT" $CASES <<'PY'
import json, sys
from pathlib import Path
out, cases = Path(sys.argv[1]), sys.argv[2:]
rows = []
for case in cases:
    p = out / ("cleanbn_" + case.replace(":", "_"))
    r = lambda s: json.loads(Path(f"{p}.{s}.json").read_text())
    rows.append({"case": case, "accuracy": r("eval")["accuracy"], "mean_skl": r("bn")["mean_skl"],
                 "adabn_accuracy": r("adabn.eval")["accuracy"], "n": r("eval")["n"]})
(out / "results.json").write_text(json.dumps(rows, indent=2))
print("| val data | accuracy | mean BN sym. KL | accuracy after adapt-bn |")
print("|---|---|---|---|")
for x in rows:
    print(f"| {x['case']} | {x['accuracy']:.3f} | {x['mean_skl']:.3f} | {x['adabn_accuracy']:.3f} |")
PY
