"""The grid's numbers as data: one record per run (read from its metrics.json) and one summary per strategy.

Every number in the report, results.csv and results.json comes from here, and every per-run number from
that run's own metrics.json.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transferlab.compare.grid import SCRATCH, CellResult

OVERFIT_THRESHOLD = 0.10  # final train accuracy - validation accuracy above this is flagged
NEAR_BEST = 0.01  # "within one point" of the best accuracy

# Per-run numbers taken from metrics.json: (column, how to read it)
RUN_FIELDS = {
    "val_accuracy": lambda m: m["val"]["accuracy"],
    "val_loss": lambda m: m["val"]["loss"],
    "test_accuracy": lambda m: m["test"]["accuracy"] if m.get("test") else None,
    "trainable_params": lambda m: m["trainable_params"],
    "total_params": lambda m: m["total_params"],
    "trainable_share": lambda m: m["trainable_share"],
    "train_seconds": lambda m: m["train_seconds"],
    "samples_per_second": lambda m: m["samples_per_second"],
    "peak_memory_mb": lambda m: m["peak_memory_mb"],
    "task_module_bytes": lambda m: m.get("task_module_bytes"),
    "best_epoch": lambda m: m["best_epoch"],
    "epochs_run": lambda m: m["epochs_run"],
    "final_train_accuracy": lambda m: m["final_train_accuracy"],
}
SUMMARY_FIELDS = [k for k in RUN_FIELDS if k != "val_loss"] + ["overfit_gap"]


@dataclass
class RunRecord:
    strategy: str
    seed: int
    run_dir: str
    status: str  # finished, failed, not run
    error: str | None = None
    values: dict = field(default_factory=dict)  # RUN_FIELDS + overfit_gap, from metrics.json
    val: dict | None = None  # metrics.json's own {"accuracy", "loss", "n"}
    test: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StrategySummary:
    strategy: str
    runs: int  # finished runs
    failed: int
    errors: list[str]
    mean: dict  # field -> mean over finished seeds (None when no run has the value)
    std: dict  # field -> sample std over seeds (0.0 for a single seed)
    negative_transfer_gap: float | None = None  # scratch accuracy - this strategy's accuracy
    transfer_hurt: bool = False
    overfits: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GridResults:
    out: str
    model: str
    data: str
    metric: str  # "test_accuracy" when every finished run has a test split, else "val_accuracy"
    strategies: list[str]  # in grid order, scratch last
    runs: list[RunRecord]
    summaries: dict[str, StrategySummary]
    grid: dict

    def to_dict(self) -> dict:
        return {"out": self.out, "model": self.model, "data": self.data, "metric": self.metric,
                "strategies": self.strategies, "grid": self.grid,
                "summary": {k: v.to_dict() for k, v in self.summaries.items()},
                "runs": [r.to_dict() for r in self.runs],
                "thresholds": {"overfit_gap": OVERFIT_THRESHOLD, "near_best": NEAR_BEST}}

    @property
    def transfer(self) -> list[StrategySummary]:
        return [s for k, s in self.summaries.items() if k != SCRATCH]

    def finished_runs(self, strategy: str) -> list[RunRecord]:
        return [r for r in self.runs if r.strategy == strategy and r.status == "finished"]


def run_values(metrics: dict) -> dict:
    values = {k: read(metrics) for k, read in RUN_FIELDS.items()}
    values["overfit_gap"] = values["final_train_accuracy"] - values["val_accuracy"]
    return values


def record_from_dir(strategy: str, seed: int, run_dir: Path) -> RunRecord:
    """A run's record from its directory alone (metrics.json, or error.json for a failed one)."""
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return RunRecord(strategy, seed, str(run_dir), "finished", values=run_values(metrics),
                         val=metrics["val"], test=metrics.get("test"))
    if (run_dir / "error.json").is_file():
        error = json.loads((run_dir / "error.json").read_text()).get("error")
        return RunRecord(strategy, seed, str(run_dir), "failed", error=error)
    return RunRecord(strategy, seed, str(run_dir), "not run")


def collect(out: str | Path, grid: dict, cell_results: list[CellResult] | None = None) -> GridResults:
    """Records for every cell of the grid saved in `out` (DIR/grid.json), read back from the run folders."""
    from transferlab.compare.grid import GridSpec, plan

    out = Path(out)
    spec = GridSpec.from_dict(grid)
    errors = {(r.cell.strategy, r.cell.seed): r.error for r in (cell_results or []) if r.status == "failed"}
    runs = []
    for cell in plan(spec, out):
        record = record_from_dir(cell.strategy, cell.seed, cell.run_dir)
        if record.status != "finished" and (cell.strategy, cell.seed) in errors:
            record.status, record.error = "failed", errors[(cell.strategy, cell.seed)]
        runs.append(record)
    order = list(spec.strategies) + ([SCRATCH] if spec.scratch else [])
    finished = [r for r in runs if r.status == "finished"]
    metric = "test_accuracy" if finished and all(r.values["test_accuracy"] is not None for r in finished) \
        else "val_accuracy"
    summaries = {s: summarize(s, [r for r in runs if r.strategy == s]) for s in order}
    scratch = summaries.get(SCRATCH)
    scratch_acc = scratch.mean.get(metric) if scratch else None
    for name, summary in summaries.items():
        summary.overfits = (summary.mean.get("overfit_gap") or 0.0) > OVERFIT_THRESHOLD
        if name != SCRATCH and scratch_acc is not None and summary.mean.get(metric) is not None:
            summary.negative_transfer_gap = scratch_acc - summary.mean[metric]
            summary.transfer_hurt = summary.negative_transfer_gap > 0
    return GridResults(str(out), spec.base.model, spec.base.data, metric, order, runs, summaries, grid)


def summarize(strategy: str, records: list[RunRecord]) -> StrategySummary:
    done = [r for r in records if r.status == "finished"]
    failed = [r for r in records if r.status == "failed"]
    mean, std = {}, {}
    for key in SUMMARY_FIELDS:
        xs = [r.values[key] for r in done if r.values.get(key) is not None]
        mean[key] = sum(xs) / len(xs) if xs else None
        std[key] = _std(xs) if xs else None
    return StrategySummary(strategy, len(done), len(failed), [f"seed {r.seed}: {r.error}" for r in failed],
                           mean, std)


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
