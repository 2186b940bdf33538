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
from transferlab.compare.significance import RULE, Accuracy, Difference, compare_accuracies

# train accuracy - validation accuracy of the selected (best) epoch above this, and beyond noise, is flagged
OVERFIT_THRESHOLD = 0.10

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
# Read from history.jsonl's record of the selected (best) epoch, so the overfitting gap compares one epoch.
EPOCH_FIELDS = ["best_epoch_train_accuracy", "best_epoch_val_accuracy"]
SUMMARY_FIELDS = [k for k in RUN_FIELDS if k != "val_loss"] + EPOCH_FIELDS + ["overfit_gap"]


@dataclass
class RunRecord:
    strategy: str
    seed: int
    run_dir: str
    status: str  # finished, failed, not run
    error: str | None = None
    values: dict = field(default_factory=dict)  # RUN_FIELDS (metrics.json) + EPOCH_FIELDS (history) + overfit_gap
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
    n: dict = field(default_factory=dict)  # "val_accuracy"/"test_accuracy" -> examples evaluated (metrics.json)
    train_n: int | None = None  # training examples in the selected epoch (history.jsonl), for the overfit test
    negative_transfer_gap: float | None = None  # scratch accuracy - this strategy's accuracy
    vs_scratch: dict | None = None  # Difference(scratch, this).to_dict(): the gap with its standard error
    transfer_hurt: bool = False  # scratch better beyond noise
    overfit_test: dict | None = None  # Difference(train, val) of the selected epoch
    overfits: bool = False  # gap above OVERFIT_THRESHOLD and beyond noise

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
                "thresholds": {"overfit_gap": OVERFIT_THRESHOLD, "significance": RULE}}

    @property
    def transfer(self) -> list[StrategySummary]:
        return [s for k, s in self.summaries.items() if k != SCRATCH]

    def finished_runs(self, strategy: str) -> list[RunRecord]:
        return [r for r in self.runs if r.strategy == strategy and r.status == "finished"]

    def accuracy(self, strategy: str, metric: str | None = None) -> Accuracy | None:
        return summary_accuracy(self.summaries[strategy], metric or self.metric)

    def compare(self, a: str, b: str, metric: str | None = None) -> Difference | None:
        """accuracy(a) - accuracy(b) with its uncertainty; None when either has no number."""
        acc_a, acc_b = self.accuracy(a, metric), self.accuracy(b, metric)
        return None if acc_a is None or acc_b is None else compare_accuracies(acc_a, acc_b)


def summary_accuracy(summary: StrategySummary, metric: str) -> Accuracy | None:
    if summary.mean.get(metric) is None:
        return None
    return Accuracy(summary.mean[metric], summary.n.get(metric), summary.runs, summary.std.get(metric) or 0.0)


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_epoch_record(metrics: dict, history: list[dict]) -> dict | None:
    return next((h for h in history if h.get("epoch") == metrics.get("best_epoch")), None)


def run_values(metrics: dict, history: list[dict] | None = None) -> dict:
    """metrics.json's numbers, plus train and validation accuracy of the selected epoch from history.jsonl.
    The overfitting gap compares those two (one epoch); without the epoch's record it is None, not a mix of
    the final epoch's train accuracy and the best epoch's validation accuracy."""
    values = {k: read(metrics) for k, read in RUN_FIELDS.items()}
    best = best_epoch_record(metrics, history or [])
    values["best_epoch_train_accuracy"] = best.get("train_accuracy") if best else None
    values["best_epoch_val_accuracy"] = best.get("val_accuracy") if best else None
    values["overfit_gap"] = (values["best_epoch_train_accuracy"] - values["best_epoch_val_accuracy"]
                             if best and None not in (best.get("train_accuracy"), best.get("val_accuracy")) else None)
    return values


def _train_n(record: dict | None) -> int | None:
    # history records carry no train count; samples_per_second = examples / seconds of that epoch
    if not record or not record.get("seconds"):
        return None
    return round(record["samples_per_second"] * record["seconds"]) or None


def record_from_dir(strategy: str, seed: int, run_dir: Path) -> RunRecord:
    """A run's record from its directory alone (metrics.json, or error.json for a failed one)."""
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        history = read_history(run_dir)
        values = run_values(metrics, history)
        values["best_epoch_train_n"] = _train_n(best_epoch_record(metrics, history))
        return RunRecord(strategy, seed, str(run_dir), "finished", values=values,
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
    flag(summaries, metric)
    return GridResults(str(out), spec.base.model, spec.base.data, metric, order, runs, summaries, grid)


def flag(summaries: dict[str, StrategySummary], metric: str) -> None:
    """Set each summary's gaps and flags; a flag is set only for a difference beyond noise (significance.py)."""
    scratch = summaries.get(SCRATCH)
    scratch_acc = summary_accuracy(scratch, metric) if scratch else None
    for name, summary in summaries.items():
        test = overfit_difference(summary)
        summary.overfit_test = test.to_dict() if test else None
        summary.overfits = bool(test and test.difference > OVERFIT_THRESHOLD and test.significant)
        acc = summary_accuracy(summary, metric)
        if name != SCRATCH and scratch_acc is not None and acc is not None:
            d = compare_accuracies(scratch_acc, acc)
            summary.negative_transfer_gap = d.difference
            summary.vs_scratch = d.to_dict()
            summary.transfer_hurt = d.difference > 0 and d.significant


def overfit_difference(summary: StrategySummary) -> Difference | None:
    """Train minus validation accuracy of the selected epoch, with its uncertainty."""
    train, val = summary.mean.get("best_epoch_train_accuracy"), summary.mean.get("best_epoch_val_accuracy")
    if train is None or val is None:
        return None
    k, std = summary.runs, summary.std
    # train count unknown (older history): use the validation count, usually the smaller, so the wider band
    train_n = summary.train_n or summary.n.get("val_accuracy")
    val_n = summary.n.get("val_accuracy")
    return compare_accuracies(Accuracy(train, train_n, k, std.get("best_epoch_train_accuracy") or 0.0),
                              Accuracy(val, val_n, k, std.get("best_epoch_val_accuracy") or 0.0))


def summarize(strategy: str, records: list[RunRecord]) -> StrategySummary:
    done = [r for r in records if r.status == "finished"]
    failed = [r for r in records if r.status == "failed"]
    mean, std = {}, {}
    for key in SUMMARY_FIELDS:
        xs = [r.values[key] for r in done if r.values.get(key) is not None]
        mean[key] = sum(xs) / len(xs) if xs else None
        std[key] = _std(xs) if xs else None
    n = {"val_accuracy": _min_n(r.val for r in done), "test_accuracy": _min_n(r.test for r in done)}
    train_ns = [r.values.get("best_epoch_train_n") for r in done if r.values.get("best_epoch_train_n")]
    return StrategySummary(strategy, len(done), len(failed), [f"seed {r.seed}: {r.error}" for r in failed],
                           mean, std, n=n, train_n=min(train_ns) if train_ns else None)


def _min_n(splits) -> int | None:
    # the smallest split a seed was scored on: the conservative n when seeds differ
    ns = [s.get("n") for s in splits if s and s.get("n")]
    return min(ns) if ns else None


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
