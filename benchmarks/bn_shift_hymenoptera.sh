#!/usr/bin/env bash
# BatchNorm under covariate shift on hymenoptera (efficientnet_lite0, linear probe on clean images):
# accuracy on corrupted validation images, the BatchNorm shift they cause, and AdaBN's recovery.
#
#   nice -n 10 bash benchmarks/bn_shift_hymenoptera.sh [OUT=/tmp/bn_shift_hym]
#
# Corrupted copies go to OUT (never into the repository). Prints a Markdown table; OUT/results.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TL="${TL:-$ROOT/.venv/bin/transferlab}"
PY="${PY:-$ROOT/.venv/bin/python}"
DATA="${DATA:-$ROOT/../shared/data/hymenoptera}"
OUT="${1:-/tmp/bn_shift_hym}"
CASES="${CASES:-clean gaussian_noise:1 gaussian_noise:3 gaussian_noise:5 contrast:3 contrast:5}"
# ADAPTED_SHIFT=0 skips the bn-shift of the adapted models (saves a pass over val per case).
mkdir -p "$OUT"

if [ ! -f "$OUT/run/metrics.json" ]; then
  "$TL" finetune --model efficientnet_lite0 --data "$DATA" --strategy linear_probe --epochs 3 --lr 1e-2 \
    --seed 0 --out "$OUT/run" --overwrite > "$OUT/finetune.json"
fi

for case in $CASES; do
  name="${case/:/_}"
  if [ "$case" = clean ]; then
    target="$DATA"
  else
    target="$OUT/data/$name"
    [ -d "$target" ] || "$TL" data corrupt --data "$DATA" --kind "${case%%:*}" --severity "${case##*:}" \
      --seed 0 --out "$target" > /dev/null
  fi
  # Each step is skipped when its output exists, so an interrupted run continues where it stopped.
  [ -s "$OUT/$name.eval.json" ] || "$TL" evaluate --run "$OUT/run" --data "$target" > "$OUT/$name.eval.json"
  [ -s "$OUT/$name.bn.json" ] || "$TL" diagnose bn-shift --run "$OUT/run" --data "$target" --json \
    --plot "$OUT/$name.bn.png" > "$OUT/$name.bn.json"
  # AdaBN on the (corrupted) training images, labels unused; then evaluate on the (corrupted) val split.
  [ -f "$OUT/adabn_$name/adabn.json" ] || "$TL" adapt-bn --run "$OUT/run" --data "$target" \
    --out "$OUT/adabn_$name" --overwrite > /dev/null
  [ -s "$OUT/$name.adabn.eval.json" ] || "$TL" evaluate --run "$OUT/adabn_$name" > "$OUT/$name.adabn.eval.json"
  if [ "${ADAPTED_SHIFT:-1}" = 1 ] && [ ! -s "$OUT/$name.adabn.bn.json" ]; then
    "$TL" diagnose bn-shift --run "$OUT/adabn_$name" --data "$target" --json > "$OUT/$name.adabn.bn.json"
  fi
  echo "done: $case" >&2
done

"$PY" - "$OUT" $CASES <<'PY'
import json, sys
from pathlib import Path
out, cases = Path(sys.argv[1]), sys.argv[2:]
rows = []
for case in cases:
    n = case.replace(":", "_")
    r = lambda s: json.loads((out / f"{n}.{s}.json").read_text())
    adapted = out / f"{n}.adabn.bn.json"
    rows.append({"case": case, "accuracy": r("eval")["accuracy"], "mean_skl": r("bn")["mean_skl"],
                 "adabn_accuracy": r("adabn.eval")["accuracy"],
                 "adabn_mean_skl": r("adabn.bn")["mean_skl"] if adapted.is_file() else None,
                 "n": r("eval")["n"]})
(out / "results.json").write_text(json.dumps(rows, indent=2))
print("| val data | accuracy | mean BN sym. KL | accuracy after adapt-bn | BN sym. KL after adapt-bn |")
print("|---|---|---|---|---|")
for x in rows:
    print(f"| {x['case']} | {x['accuracy']:.3f} | {x['mean_skl']:.3f} | {x['adabn_accuracy']:.3f} | "
          f"{'-' if x['adabn_mean_skl'] is None else format(x['adabn_mean_skl'], '.3f')} |")
PY
