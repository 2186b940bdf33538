"""What sharing the pre-trained model's outputs saves the comparison report's CKA and forgetting sections.

Times `drift_for_run` and `forgetting_for_run` over the first seed of some strategies of a finished
`transferlab compare` grid, once without a cache (each run computes the pre-trained model's outputs again)
and once with one cache for all (as the report does), and checks that both give the same numbers.

    .venv/bin/python benchmarks/report_sections_cache.py GRID_DIR [--strategies full,l2sp,lora]
        [--source-data DIR]   (default: $TRANSFERLAB_DATA/hymenoptera, docs/data.md)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from _data import dataset
from transferlab.diagnostics.drift import drift_for_run
from transferlab.diagnostics.forgetting import forgetting_for_run

MAX_BATCHES = 4  # as the report's sections


def first_seed(grid: Path, strategy: str) -> Path:
    seeds = sorted(p for p in (grid / "runs" / strategy).iterdir() if (p / "metrics.json").is_file())
    if not seeds:
        raise SystemExit(f"{grid / 'runs' / strategy}: no finished run")
    return seeds[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("grid", type=Path)
    parser.add_argument("--strategies", default="full,l2sp,lora", help="run folder names under GRID/runs")
    parser.add_argument("--source-data", help="default: $TRANSFERLAB_DATA/hymenoptera (docs/data.md)")
    args = parser.parse_args()
    args.source_data = args.source_data or str(dataset("hymenoptera", "--source-data"))
    runs = [first_seed(args.grid, s) for s in args.strategies.split(",")]
    sections = {"drift": lambda run, cache: drift_for_run(run, max_batches=MAX_BATCHES, cache=cache),
                "forgetting": lambda run, cache: forgetting_for_run(run, source_data=args.source_data, cache=cache)}
    for name, section in sections.items():
        results, seconds = {}, {}
        for label, cache in (("no cache", None), ("shared cache", {})):
            start = time.perf_counter()
            results[label] = [section(run, cache).to_dict() for run in runs]
            seconds[label] = time.perf_counter() - start
        same = results["no cache"] == results["shared cache"]
        print(f"{name:<11} {len(runs)} runs: {seconds['no cache']:.1f} s without a cache, "
              f"{seconds['shared cache']:.1f} s with one; same numbers: {same}")


if __name__ == "__main__":
    main()
