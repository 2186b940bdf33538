"""Check a comparison's report against its runs: every strategy's validation accuracy in report.md,
results.csv and results.json must be the mean over seeds of the runs' own metrics.json values.

    .venv/bin/python benchmarks/check_compare_report.py COMPARE_DIR

Reads the run folders from results.json (run_dir of every finished run); prints one line per strategy and
exits 1 on any mismatch.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def report_table(report_md: str) -> dict[str, list[str]]:
    """Rows of the first Markdown table ("| strategy | runs | val accuracy | ..."), keyed by strategy."""
    rows, header = {}, None
    for line in report_md.splitlines():
        if not line.startswith("|"):
            if header is not None and rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells
    return {"header": header, **rows}


def main(out: Path) -> int:
    results = json.loads((out / "results.json").read_text())
    csv_rows = {r["strategy"]: r for r in csv.DictReader((out / "results.csv").open())}
    table = report_table((out / "report.md").read_text())
    col = next(i for i, h in enumerate(table["header"]) if h.startswith("val accuracy"))
    by_strategy: dict[str, list[float]] = {}
    for run in results["runs"]:
        if run["status"] == "finished":
            metrics = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
            by_strategy.setdefault(run["strategy"], []).append(metrics["val"]["accuracy"])
    selected = (results.get("scratch_choice") or {}).get("selected")
    if selected in by_strategy:  # the baseline's chosen recipe is the report's scratch row
        by_strategy["scratch"] = by_strategy.pop(selected)
    bad = 0
    for strategy, accs in by_strategy.items():
        if strategy not in table:  # a baseline recipe that was not chosen: in its own table, not this one
            continue
        mean = statistics.fmean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0  # sample std, as the report's
        in_json = results["summary"][strategy]["mean"]["val_accuracy"]
        in_csv = float(csv_rows[strategy]["val_accuracy_mean"])
        in_md = table[strategy][col]
        md_std = in_md.split("±")[1].strip() if "±" in in_md else None
        ok = (abs(in_json - mean) < 1e-12 and abs(in_csv - mean) < 1e-12
              and in_md.split(" ")[0] == f"{mean:.3f}" and md_std in (None, f"{std:.3f}"))
        bad += not ok
        print(f"{'ok  ' if ok else 'BAD '} {strategy:<28} metrics.json {[round(a, 4) for a in accs]} mean "
              f"{mean:.4f} | results.json {in_json:.4f} | results.csv {in_csv:.4f} | report.md {in_md}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
