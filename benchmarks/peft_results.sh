#!/usr/bin/env bash
# The numbers of issue 3's "What it must show": lora, adapter and bitfit with their default settings.
# Usage: bash benchmarks/peft_results.sh [OUT_DIR] [NAME...]   (about 60-90 min on 2 CPU cores for all)
# SST-2 runs use the same options as benchmarks/core_results.sh's sst2_full (--max-val 1000 --max-length 64),
# so `full` there is the reference; sst2_full is repeated here (last) to compare on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_peft_results}
shift || true
ONLY=" $* "
HYM=../shared/data/hymenoptera
SST=../shared/data/sst2
TL=.venv/bin/transferlab
mkdir -p "$OUT"
run() {  # name, then finetune arguments
  local name=$1; shift
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return 0; fi
  if [ ! -f "$OUT/$name/metrics.json" ]; then
    $TL finetune "$@" --out "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1 || { echo "$name FAILED"; tail -3 "$OUT/$name.log"; return 0; }
  fi
  .venv/bin/python - "$OUT/$name/metrics.json" "$name" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
test = m["test"]["accuracy"] if m.get("test") else None
size = (f"  module {m['task_module_bytes']:,} B = {100 * m['task_module_bytes'] / m['full_checkpoint_bytes']:.2f}% "
        f"of full {m['full_checkpoint_bytes']:,} B") if "task_module_bytes" in m else ""
print(f"{sys.argv[2]:<18} val {m['val']['accuracy']:.4f}  test {test if test is None else round(test, 4)}  "
      f"trainable {m['trainable_params']:,}/{m['total_params']:,} ({100 * m['trainable_share']:.3f}%)  "
      f"{m['train_seconds']:.0f}s  best epoch {m['best_epoch']}{size}")
PY
}
SST_OPTS="--max-train 2000 --max-val 1000 --max-length 64"
run hym_lora     --model efficientnet_lite0 --data $HYM --strategy lora
run sst2_lora    --model minilm_l6 --data $SST --strategy lora $SST_OPTS
run hym_bitfit   --model efficientnet_lite0 --data $HYM --strategy bitfit
run hym_adapter  --model efficientnet_lite0 --data $HYM --strategy adapter
run sst2_bitfit  --model minilm_l6 --data $SST --strategy bitfit $SST_OPTS
run sst2_adapter --model minilm_l6 --data $SST --strategy adapter $SST_OPTS
run sst2_full    --model minilm_l6 --data $SST --strategy full $SST_OPTS
