#!/usr/bin/env bash
# docs/diagnostics.md's hymenoptera rows: drift (weight change and CKA per depth group) and forgetting of
# ImageNet's ant and bee classes, for `efficientnet_lite0` fine-tuned on hymenoptera, seed 0, 5 epochs.
# Usage: bash benchmarks/hymenoptera_diagnostics.sh [OUT_DIR] [NAME...]   (about 30 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_OUT=/tmp/transferlab_hym_diagnostics
source benchmarks/_finetune_rows.sh "$@"
data_set HYM hymenoptera
SRC="--source-data $HYM"
run full_auto         --model efficientnet_lite0 --data $HYM --strategy full $SRC
run lwf_auto          --model efficientnet_lite0 --data $HYM --strategy full+lwf $SRC
run ewc_auto          --model efficientnet_lite0 --data $HYM --strategy full+ewc:lam=1000 $SRC
run decay03_auto      --model efficientnet_lite0 --data $HYM --strategy discriminative:decay=0.3 $SRC
run full_frozen       --model efficientnet_lite0 --data $HYM --strategy full --bn-stats frozen $SRC
run ewc_frozen        --model efficientnet_lite0 --data $HYM --strategy full+ewc:lam=1000 --bn-stats frozen $SRC
run decay03_frozen    --model efficientnet_lite0 --data $HYM --strategy discriminative:decay=0.3 --bn-stats frozen $SRC
for name in full_auto lwf_auto ewc_auto decay03_auto full_frozen ewc_frozen decay03_frozen; do
  if [ -n "${ONLY// /}" ] && [[ "$ONLY" != *" $name "* ]]; then continue; fi
  [ -f "$OUT/$name/metrics.json" ] || continue
  [ -f "$OUT/$name.forgetting.json" ] || "$TL" diagnose forgetting --run "$OUT/$name" --source-data $HYM --json \
    > "$OUT/$name.forgetting.json" 2>/dev/null
  [ -f "$OUT/$name.drift.json" ] || "$TL" diagnose drift --run "$OUT/$name" --json > "$OUT/$name.drift.json" 2>/dev/null
  "$PY" - "$OUT" "$name" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
f = json.load(open(f"{out}/{name}.forgetting.json"))
d = json.load(open(f"{out}/{name}.drift.json"))
groups = d["groups"] if isinstance(d, dict) else d
cells = []
for g in groups:
    change, cka = g.get("weight_change"), g.get("cka")
    if cka is None:
        continue
    cells.append(f"{g['name']} {change:.2g}/{cka:.4g}/1-CKA {1 - cka:.2g}")
print(f"{name:<16} source acc before {f['accuracy_before']:.3f} after {f['accuracy_after']:.3f} "
      f"forgetting {f['forgetting']:+.3f}")
print("    drift: " + "; ".join(cells))
PY
done
