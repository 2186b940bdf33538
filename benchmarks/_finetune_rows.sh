# Shared by core_results.sh and peft_results.sh (sourced, not run, from the repository root):
#   DEFAULT_OUT=/tmp/x; source benchmarks/_finetune_rows.sh "$@"     # arguments: [OUT_DIR] [NAME...]
#   data_set HYM hymenoptera                                          # the data sets it reads (benchmarks/_data.sh)
# then `run NAME finetune-args...` trains OUT/NAME with `transferlab finetune` unless its metrics.json
# exists, and prints one line of results; NAMEs given on the command line limit the runs (none: all).
OUT=${1:-$DEFAULT_OUT}
shift || true
ONLY=" $* "
source benchmarks/_data.sh  # the data sets: $TRANSFERLAB_DATA (docs/data.md)
TL=.venv/bin/transferlab
PY=.venv/bin/python
mkdir -p "$OUT"

run() {
  local name=$1; shift
  if [ -n "${ONLY// /}" ] && [[ "$ONLY" != *" $name "* ]]; then return 0; fi
  if [ ! -f "$OUT/$name/metrics.json" ]; then
    "$TL" finetune "$@" --out "$OUT/$name" --overwrite > "$OUT/$name.log" 2>&1 \
      || { echo "$name FAILED"; tail -3 "$OUT/$name.log"; return 0; }
  fi
  "$PY" - "$OUT/$name/metrics.json" "$name" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
test = m["test"]["accuracy"] if m.get("test") else None
size = (f"  module {m['task_module_bytes']:,} B = {100 * m['task_module_bytes'] / m['full_checkpoint_bytes']:.2f}% "
        f"of full {m['full_checkpoint_bytes']:,} B") if "task_module_bytes" in m else ""
print(f"{sys.argv[2]:<28} val {m['val']['accuracy']:.4f}  test {test if test is None else round(test, 4)}  "
      f"trainable {m['trainable_params']:,}/{m['total_params']:,} ({100 * m['trainable_share']:.3f}%)  "
      f"{m['train_seconds']:.0f}s  best epoch {m['best_epoch']}{size}")
PY
}
