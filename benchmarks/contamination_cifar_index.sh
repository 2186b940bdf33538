#!/usr/bin/env bash
# docs/contamination.md, "Through the store and the index on CIFAR-10": CIFAR-10's 10,000 test images against its
# 50,000 training images, three ways:
#   exact_fixed  --index exact --threshold-mode fixed   (what the earlier 271 s were measured with)
#   faiss_fixed  --index faiss --threshold-mode fixed   (feature store + faiss IVF, every candidate re-verified)
#   faiss_data   --index faiss (the default thresholds: calibrated on this source at --fpr 0.001)
# then, per method, how often faiss finds the same best source row as the exact search (the recall lost to
# approximation on real embeddings) and whether the dirty flags agree. Run it alone: the times are the point.
# Usage: bash benchmarks/contamination_cifar_index.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_contamination_cifar_index}
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
data_set CIFAR cifar10
TL=.venv/bin/transferlab
PY=.venv/bin/python
mkdir -p "$OUT"
check() { local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && { echo "$name: done"; return 0; }
  /usr/bin/time -f "%e s wall, %M KB peak" $TL contamination --source "$CIFAR" --target "$CIFAR" --split test "$@" \
    --out "$OUT/$name" --overwrite > "$OUT/$name.log" 2> "$OUT/$name.err" || { tail -3 "$OUT/$name.err"; exit 1; }
  echo "$name: $(tail -1 "$OUT/$name.err")"; }
check exact_fixed --index exact --threshold-mode fixed
check faiss_fixed --index faiss --threshold-mode fixed
check faiss_data --index faiss
"$PY" - "$OUT" <<'PY'
import csv, json, sys
from collections import defaultdict
from pathlib import Path
out = Path(sys.argv[1])
def rows(name):
    got = defaultdict(dict)
    with open(out / name / "matches.csv") as f:
        for r in csv.DictReader(f):
            got[r["method"]][r["target_id"]] = (r["source_id"], r["dirty"])
    return got
exact, faiss = rows("exact_fixed"), rows("faiss_fixed")
print("| method | same best source (faiss vs exact) | same dirty flag | dirty: exact / faiss |")
print("|---|---|---|---|")
for m in exact:
    ids = exact[m].keys() & faiss[m].keys()
    same = sum(exact[m][t][0] == faiss[m][t][0] for t in ids) / len(ids)
    flag = sum(exact[m][t][1] == faiss[m][t][1] for t in ids) / len(ids)
    dirty = lambda g: sum(v[1] in ("1", "True", "true") for v in g[m].values())
    print(f"| {m} | {same:.4f} | {flag:.4f} | {dirty(exact)} / {dirty(faiss)} |")
print()
print("| run | seconds | peak RSS (MB) | dirty (any) | thresholds | warnings |")
print("|---|---|---|---|---|---|")
for name in ("exact_fixed", "faiss_fixed", "faiss_data"):
    s = json.loads((out / name / "summary.json").read_text())
    th = {m: v.get("threshold") for m, v in s["methods"].items()}
    print(f"| {name} | {s['seconds']:.0f} | {s['peak_rss_mb']:.0f} | {s['n_dirty']} ({s['dirty_fraction']:.3f}) | "
          f"{th} | {len(s.get('warnings', []))} |")
PY
