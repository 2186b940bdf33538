#!/usr/bin/env bash
# docs/labs.md (and docs/labs/<lab>/figure.png) from one `transferlab lab run all` on this machine.
#
#   bash benchmarks/labs_page.sh [OUT] [--quick]      # OUT defaults to /tmp/transferlab_labs
#
# Every number and verdict on the page is the labs' own (result.json); this script only copies the page and the
# figures into docs/ and points the figure links at the copies.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/transferlab_labs}
shift || true
source benchmarks/_data.sh  # the labs' data sets: $TRANSFERLAB_DATA, else ../shared/data (docs/data.md)
data_set HYM hymenoptera
export TRANSFERLAB_DATA=$DATA_ROOT
.venv/bin/transferlab lab run all "$@" --out "$OUT"
for result in "$OUT"/*/result.json; do
  name=$(basename "$(dirname "$result")")
  mkdir -p "docs/labs/$name"
  cp "$OUT/$name/figure.png" "docs/labs/$name/figure.png"
done
sed -E 's#\]\(([a-z0-9_]+)/figure\.png\)#](labs/\1/figure.png)#' "$OUT/labs.md" > docs/labs.md
echo "docs/labs.md written from $OUT/labs.md"
