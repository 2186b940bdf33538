#!/usr/bin/env bash
# The numbers of issue 2's "What it must show", each from one `transferlab finetune` with default settings.
# Usage: bash benchmarks/core_results.sh [OUT_DIR] [NAME...]   (about 30-60 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_OUT=/tmp/transferlab_core_results
source benchmarks/_finetune_rows.sh "$@"
data_set HYM hymenoptera
data_set SST sst2
run hym_linear_probe   --model efficientnet_lite0 --data $HYM --strategy linear_probe
run hym_full           --model efficientnet_lite0 --data $HYM --strategy full
run hym_discriminative --model efficientnet_lite0 --data $HYM --strategy discriminative
run hym_l2sp           --model efficientnet_lite0 --data $HYM --strategy l2sp
run hym_lp_ft          --model efficientnet_lite0 --data $HYM --strategy lp_ft
run hym_full_headinit  --model efficientnet_lite0 --data $HYM --strategy full --head-init source
run sst2_full          --model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64
run sst2_full_seed1    --model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64 --seed 1
run sst2_full_seed2    --model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64 --seed 2
run sst2_full_seed3    --model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64 --seed 3
run sst2_full_seed4    --model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64 --seed 4
