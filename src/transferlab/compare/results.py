"""The grid's numbers as data: one record per run (read from its metrics.json) and one summary per strategy.

Every number in the report, results.csv and results.json comes from here, and every per-run number from
that run's own metrics.json.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from transferlab import stats
from transferlab.compare.grid import SCRATCH, SCRATCH_STRATEGY, CellResult, scratch_recipe
from transferlab.runs import run_examples

# How the baseline's recipe is chosen among its candidates (grid.SCRATCH_SEARCH), stated in the report.
SCRATCH_RULE = ("the candidate recipe with the highest mean validation accuracy over seeds (each run's selected "
                "epoch) is the baseline; ties go to the first in search order. Test accuracy plays no part")

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
    "dev_risk": lambda m: (m.get("dev") or {}).get("risk"),  # --target-data: Deep Embedded Validation
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
    vs_scratch: dict | None = None  # stats.Comparison(scratch - this).to_dict(), Holm over the strategies
    transfer_hurt: bool = False  # scratch better beyond noise
    overfit_test: dict | None = None  # stats.Comparison(train - val) of the selected epoch
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
    scratch_choice: dict | None = None  # how the baseline's recipe was chosen (select_scratch)
    tuning: dict | None = None  # --tune: DIR/tuning/summary.json (every study, its trials, the chosen settings)
    tuned: "GridResults | None" = None  # --tune: the chosen settings' runs over the seeds (DIR/tuned)
    # (run_dir, split) -> run_examples(...): each run's file read once, however many comparisons use it
    _examples: dict = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"out": self.out, "model": self.model, "data": self.data, "metric": self.metric,
                "strategies": self.strategies, "grid": self.grid,
                "summary": {k: v.to_dict() for k, v in self.summaries.items()},
                "runs": [r.to_dict() for r in self.runs], "scratch_choice": self.scratch_choice,
                "tuning": self.tuning,
                "thresholds": {"overfit_gap": OVERFIT_THRESHOLD, "significance": stats.RULE}}

    @property
    def target_data(self) -> str | None:
        """The unlabelled target every cell was given (`compare --target-data`), None without."""
        return (self.grid.get("base") or {}).get("strategy_options", {}).get("target_data")

    @property
    def transfer(self) -> list[StrategySummary]:
        return [s for k, s in self.summaries.items() if k != SCRATCH]

    def finished_runs(self, strategy: str) -> list[RunRecord]:
        """The strategy's finished runs; for SCRATCH, those of the selected candidate recipe."""
        if strategy == SCRATCH and self.scratch_choice:
            strategy = self.scratch_choice["selected"]
        return [r for r in self.runs if r.strategy == strategy and r.status == "finished"]

    def examples(self, strategy: str, metric: str | None = None) -> tuple[list[np.ndarray], np.ndarray | None] | None:
        """(per-seed correctness arrays, labels) of the strategy's runs on the metric's split, when every run
        kept them (DIR/examples.safetensors) over the same examples; None otherwise."""
        split = "test" if (metric or self.metric) == "test_accuracy" else "val"
        arrays, labels = [], None
        for record in self.finished_runs(strategy):
            key = (record.run_dir, split)
            if key not in self._examples:
                self._examples[key] = run_examples(record.run_dir, split)
            kept = self._examples[key]
            if kept is None:
                return None
            correct, run_labels = kept
            if arrays and (len(correct) != len(arrays[0]) or not _same_labels(labels, run_labels)):
                return None
            arrays.append(correct)
            labels = run_labels if labels is None else labels
        return (arrays, labels) if arrays else None

    def compare(self, a: str, b: str, metric: str | None = None) -> stats.Comparison | None:
        """accuracy(a) - accuracy(b) under the project's rule (transferlab.stats): paired on the examples both
        were scored on when the runs kept them, else from the per-seed accuracies; None when either has none."""
        metric = metric or self.metric
        ea, eb = self.examples(a, metric), self.examples(b, metric)
        if ea and eb and len(ea[0][0]) == len(eb[0][0]) and _same_labels(ea[1], eb[1]):
            return stats.paired_runs(ea[0], eb[0])
        split = "test" if metric == "test_accuracy" else "val"
        va, vb = ([r.values[metric] for r in self.finished_runs(x) if r.values.get(metric) is not None]
                  for x in (a, b))
        if not va or not vb:
            return None
        return stats.unpaired_accuracies(va, _run_n(self.finished_runs(a), split), vb,
                                         _run_n(self.finished_runs(b), split))


def _same_labels(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two runs were scored on the same examples when their label sequences agree (unknown: trusted)."""
    return a is None or b is None or (len(a) == len(b) and bool(np.array_equal(a, b)))


def _run_n(records: list[RunRecord], split: str) -> int | None:
    return _min_n(getattr(r, split) for r in records)


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
    finished = [r for r in runs if r.status == "finished"]
    metric = "test_accuracy" if finished and all(r.values["test_accuracy"] is not None for r in finished) \
        else "val_accuracy"
    candidates = spec.scratch_candidates()
    summaries = {s: summarize(s, [r for r in runs if r.strategy == s]) for s in list(spec.strategies) + candidates}
    results = GridResults(str(out), spec.base.model, spec.base.data, metric, list(spec.strategies), runs,
                          summaries, grid)
    if candidates:
        results.scratch_choice = select_scratch(summaries, candidates, spec)
        selected = summaries[results.scratch_choice["selected"]]
        results.summaries = {**{s: summaries[s] for s in spec.strategies},
                             SCRATCH: StrategySummary(**{**selected.__dict__, "strategy": SCRATCH})}
        results.strategies.append(SCRATCH)
    flag(results)
    if spec.tune is not None:
        _attach_tuning(results, out, spec)
    return results


def _attach_tuning(results: "GridResults", out: Path, spec) -> None:
    """Give a grid's results its tuning: the summary and the tuned runs' own results (DIR/tuned)."""
    from transferlab.compare.tune import TUNED, read_summary, tuned_spec

    summary = read_summary(out)
    if summary is None:
        return
    results.tuning = summary
    tuned = tuned_spec(spec, summary)
    if tuned.strategies or tuned.scratch:
        results.tuned = collect(out / TUNED, tuned.to_dict())


def select_scratch(summaries: dict[str, StrategySummary], candidates: list[str], spec) -> dict:
    """The baseline's recipe, chosen on validation (SCRATCH_RULE), with every candidate's numbers."""
    rows = []
    for name in candidates:
        s = summaries[name]
        rows.append({"name": name, "recipe": scratch_recipe(name), "runs": s.runs,
                     "val_accuracy": s.mean.get("val_accuracy"), "val_accuracy_std": s.std.get("val_accuracy"),
                     "test_accuracy": s.mean.get("test_accuracy")})
    scored = [row for row in rows if row["val_accuracy"] is not None]
    selected = max(scored, key=lambda row: row["val_accuracy"])["name"] if scored else candidates[0]
    for row in rows:
        row["selected"] = row["name"] == selected
    epochs = spec.scratch_epochs or spec.base.train.epochs
    return {"selected": selected, "recipe": scratch_recipe(selected), "strategy": SCRATCH_STRATEGY,
            "epochs": epochs, "grid_epochs": spec.base.train.epochs, "base_lr": spec.base.train.lr,
            "candidates": rows, "rule": SCRATCH_RULE}


def flag(results: GridResults) -> None:
    """Set each summary's gaps and flags; a flag is set only for a difference beyond noise (transferlab.stats).
    The comparisons with the baseline are one family, Holm-corrected together."""
    summaries = results.summaries
    for name, summary in summaries.items():
        test = overfit_difference(results, name)
        summary.overfit_test = test.to_dict() if test else None
        summary.overfits = bool(test and test.estimate > OVERFIT_THRESHOLD and test.significant)
    if SCRATCH not in summaries:
        return
    names = [n for n in summaries if n != SCRATCH]
    tests = {n: results.compare(SCRATCH, n) for n in names}
    found = [n for n in names if tests[n] is not None]
    for name, test in zip(found, stats.holm([tests[n] for n in found])):
        summary = summaries[name]
        summary.negative_transfer_gap = test.estimate
        summary.vs_scratch = test.to_dict()
        summary.transfer_hurt = test.estimate > 0 and test.significant


def overfit_difference(results: GridResults, strategy: str) -> stats.Comparison | None:
    """Train minus validation accuracy of the selected epoch over the strategy's seeds (different examples:
    unpaired), with its uncertainty."""
    records = [r for r in results.finished_runs(strategy) if r.values.get("best_epoch_train_accuracy") is not None
               and r.values.get("best_epoch_val_accuracy") is not None]
    if not records:
        return None
    val_n = _run_n(records, "val")
    train_ns = [r.values.get("best_epoch_train_n") for r in records if r.values.get("best_epoch_train_n")]
    # train count unknown (older history): use the validation count, usually the smaller, so the wider band
    train_n = min(train_ns) if train_ns else val_n
    return stats.unpaired_accuracies([r.values["best_epoch_train_accuracy"] for r in records], train_n,
                                     [r.values["best_epoch_val_accuracy"] for r in records], val_n)


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
