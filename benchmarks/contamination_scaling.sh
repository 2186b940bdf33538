#!/usr/bin/env bash
# docs/contamination.md: time and peak memory of `transferlab contamination` (every image method, with its
# calibration) for CIFAR-10's 10,000 test images against 5k, 10k, 25k and 50k training images, and the real case
# (test against all 50,000 training images) with its page. The sources below 50k are random samples (seed 0),
# written as folders of links. Run it alone: timings on a shared machine mean little.
# Usage: bash benchmarks/contamination_scaling.sh [OUT_DIR] [SIZES]   (SIZES default: "5000 10000 25000 50000")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_contamination_scaling}
SIZES=${2:-"5000 10000 25000 50000"}
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
data_set CIFAR cifar10
CIFAR=$(realpath "$CIFAR")
TL=.venv/bin/transferlab
PY=.venv/bin/python
mkdir -p "$OUT"
for n in $SIZES; do
  if [ "$n" -ge 50000 ]; then src=$CIFAR; else
    src=$OUT/source_$n
    [ -d "$src" ] || "$PY" - "$CIFAR" "$src" "$n" <<'PY'
import os, sys
from pathlib import Path
import numpy as np
root, dest, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = sorted(root.glob("train/*/*.jpg"))
for i in np.sort(np.random.default_rng(0).choice(len(files), n, replace=False)):
    d = dest / files[i].relative_to(root)
    d.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(files[i], d)
PY
  fi
  echo "== $n source images"
  /usr/bin/time -f "%e s wall, %M KB peak" $TL contamination --source "$src" --target "$CIFAR" --split test \
    --threshold-mode fixed --out "$OUT/check_$n" --overwrite > "$OUT/check_$n.log" 2> "$OUT/check_$n.err" \
    || { tail -3 "$OUT/check_$n.err"; exit 1; }
  tail -1 "$OUT/check_$n.err"
  grep -E "dirty|recall" "$OUT/check_$n.log" | head -12
done
"$PY" - "$OUT" $SIZES <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| source images | seconds | peak RSS (MB) | dirty (any) | aligned | phash | dhash | embedding |")
print("|---|---|---|---|---|---|---|---|")
for n in sys.argv[2:]:
    s = json.loads((out / f"check_{n}" / "summary.json").read_text())
    m = s["methods"]
    print(f"| {int(n):,} | {s['seconds']:.0f} | {s['peak_rss_mb']:.0f} | {s['n_dirty']} ({s['dirty_fraction']:.3f}) | "
          + " | ".join(str(m[k]["n_dirty"]) for k in ("aligned", "phash", "dhash", "embedding")) + " |")
PY
