#!/usr/bin/env bash
# The numbers of issue 2's "What it must show", each from one `transferlab finetune` with default settings.
# Usage: bash benchmarks/core_results.sh [OUT_DIR]   (about 30-60 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_core_results}
HYM=../shared/data/hymenoptera
SST=../shared/data/sst2
TL=.venv/bin/transferlab
mkdir -p "$OUT"
run() {  # name, then finetune arguments
  local name=$1; shift
  if [ ! -f "$OUT/$name/metrics.json" ]; then
    $TL finetune "$@" --out "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1 || { echo "$name FAILED"; tail -3 "$OUT/$name.log"; return 0; }
  fi
  .venv/bin/python - "$OUT/$name/metrics.json" "$name" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
test = m["test"]["accuracy"] if m.get("test") else None
print(f"{sys.argv[2]:<28} val {m['val']['accuracy']:.4f}  test {test if test is None else round(test, 4)}  "
      f"trainable {m['trainable_params']:,}/{m['total_params']:,}  {m['train_seconds']:.0f}s  best epoch {m['best_epoch']}")
PY
}
run hym_linear_probe   --model efficientnet_lite0 --data $HYM --strategy linear_probe
run hym_full           --model efficientnet_lite0 --data $HYM --strategy full
run hym_discriminative --model efficientnet_lite0 --data $HYM --strategy discriminative
run hym_l2sp           --model efficientnet_lite0 --data $HYM --strategy l2sp
run hym_lp_ft          --model efficientnet_lite0 --data $HYM --strategy lp_ft
run hym_full_headinit  --model efficientnet_lite0 --data $HYM --strategy full --head-init source
run sst2_full          --model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64
