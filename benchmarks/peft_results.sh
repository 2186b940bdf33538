#!/usr/bin/env bash
# The numbers of issue 3's "What it must show": lora, adapter and bitfit with their default settings.
# Usage: bash benchmarks/peft_results.sh [OUT_DIR] [NAME...]   (about 60-90 min on 2 CPU cores for all)
# SST-2 runs use the same options as benchmarks/core_results.sh's sst2_full (--max-val 1000 --max-length 64),
# so `full` there is the reference; sst2_full is repeated here (last) to compare on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_OUT=/tmp/transferlab_peft_results
source benchmarks/_finetune_rows.sh "$@"
data_set HYM hymenoptera
data_set SST sst2
SST_OPTS="--max-train 2000 --max-val 1000 --max-length 64"
run hym_lora     --model efficientnet_lite0 --data $HYM --strategy lora
run sst2_lora    --model minilm_l6 --data $SST --strategy lora $SST_OPTS
run hym_bitfit   --model efficientnet_lite0 --data $HYM --strategy bitfit
run hym_adapter  --model efficientnet_lite0 --data $HYM --strategy adapter
run sst2_bitfit  --model minilm_l6 --data $SST --strategy bitfit $SST_OPTS
run sst2_adapter --model minilm_l6 --data $SST --strategy adapter $SST_OPTS
run sst2_full    --model minilm_l6 --data $SST --strategy full $SST_OPTS
