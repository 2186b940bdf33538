#!/usr/bin/env bash
# SST-2 full fine-tuning of minilm_l6 with the defaults, five seeds, in fp32 and in bf16 (autocast): test accuracy
# (mean and sample std over the seeds) and training samples per second of each precision, in one run.
# Usage: bash benchmarks/sst2_precision.sh [OUT_DIR] [NAME...]   (about 50 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_OUT=/tmp/transferlab_sst2_precision
source benchmarks/_finetune_rows.sh "$@"
SST_ARGS=(--model minilm_l6 --data $SST --strategy full --max-train 2000 --max-val 1000 --max-length 64)
for seed in 0 1 2 3 4; do  # alternating, so a drift in machine load hits both precisions alike
  run "fp32_seed$seed" "${SST_ARGS[@]}" --seed $seed --precision fp32
  run "bf16_seed$seed" "${SST_ARGS[@]}" --seed $seed --precision bf16
done
"$PY" - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
for precision in ("fp32", "bf16"):
    runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{precision}_seed*/metrics.json"))]
    if not runs:
        continue
    test = [m["test"]["accuracy"] for m in runs]
    speed = [m["samples_per_second"] for m in runs]
    spread = statistics.stdev(test) if len(test) > 1 else float("nan")
    print(f"{precision}: {len(runs)} seeds, test accuracy {statistics.mean(test):.4f} +- {spread:.4f} "
          f"({', '.join(f'{t:.3f}' for t in test)}); training {statistics.median(speed):.1f} samples/s (median)")
PY
