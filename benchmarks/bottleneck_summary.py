"""The tables of docs/bottleneck.md from a finished `benchmarks/bottleneck_study.sh` folder (numbers read back
from the runs' own result files; the only arithmetic here is the mean and sample std over seeds).

    .venv/bin/python benchmarks/bottleneck_summary.py OUT_DIR
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from pretraining_summary import load, seconds  # the sibling script's readers (benchmarks/ is on sys.path)


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def cifar_table(out: Path) -> None:
    f = out / "cifar_near" / "results.json"
    if not f.is_file():
        print(f"### CIFAR near target\n\n(not run yet: no {f})\n")
        return
    result = load(f)
    per_run = {}  # (strategy, seed) -> record
    for r in result["records"]:
        per_run[(r["strategy"], r["seed"])] = r
    forgetting: dict[str, list[float]] = {}
    source_after: dict[str, list[float]] = {}
    before = None
    for r in result["forgetting"]:
        forgetting.setdefault(r["strategy"], []).append(r["forgetting"])
        source_after.setdefault(r["strategy"], []).append(r["accuracy_after"])
        before = r["accuracy_before"]
    strategies = list(result["summary"]["strategies"])
    print(f"### CIFAR near target (step wall time {seconds(out, 'cifar_near')})\n")
    print(f"Source test accuracy before fine-tuning: {before:.3f}.\n" if before is not None else "")
    print("| strategy | seeds | target val acc | target test acc | source test acc after | forgetting |")
    print("|---|---|---|---|---|---|")
    for name in strategies:
        runs = [r for (s, _), r in per_run.items() if s == name]
        print(f"| `{name}` | {len(runs)} | {mean_std([r['val_accuracy'] for r in runs])} | "
              f"{mean_std([r['test_accuracy'] for r in runs])} | {mean_std(source_after.get(name, []))} | "
              f"{mean_std(forgetting.get(name, []))} |")
    print("\nmean ± sample std over seeds; forgetting = source test accuracy before minus after.\n")


def compare_rows(out: Path, name: str, head: str) -> list[str]:
    f = out / name / "results.json"
    if not f.is_file():
        return [f"| (not run yet: no {f}) | | | | |"]
    result = load(f)
    rows = []
    for strategy in result["grid"]["strategies"]:
        runs = [r for r in result["runs"] if r["strategy"] == strategy and r["status"] == "finished"]
        rows.append(f"| `{strategy}` | `{head}` | {len(runs)} | "
                    f"{mean_std([r['values']['val_accuracy'] for r in runs])} | "
                    f"{mean_std([r['values']['test_accuracy'] for r in runs])} | "
                    + " ".join(f"{r['values']['test_accuracy']:.3f}" for r in runs) + " |")
    return rows


def sst2_table(out: Path) -> None:
    print(f"### SST-2 (sst2_clean, minilm_l6, 2,000 training phrases; wall time {seconds(out, 'sst2_linear')} "
          f"+ {seconds(out, 'sst2_vib')})\n")
    print("| strategy | head | seeds | val acc | test acc | test acc per seed |\n|---|---|---|---|---|---|")
    for row in compare_rows(out, "sst2_linear", "linear") + compare_rows(out, "sst2_vib", "vib"):
        print(row)
    print("\nmean ± sample std over seeds; val = the 872 sst2_clean dev sentences, test = the 872 test sentences.\n")


def main() -> None:
    out = Path(sys.argv[1])
    cifar_table(out)
    sst2_table(out)


if __name__ == "__main__":
    main()
