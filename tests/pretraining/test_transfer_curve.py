"""`transferlab transfer-curve` end to end on the shared digits pre-training run (kept epochs 2, 4, 5): the files,
records read back from the runs, the scratch grid, forgetting along the curve, an exact --resume, refusals."""
from __future__ import annotations

import csv
import shutil
import statistics
from pathlib import Path

import pytest

from transferlab.compare.grid import SCRATCH_SEARCH, safe_name, scratch_name
import torch

from tests.pretraining.conftest import (
    DIGITS_KEPT,
    cli,
    error_line,
    history,
    load_json,
    run_cli,
    snapshot,
)
from tests.reliability.conftest import strip_timing

SEEDS = [0, 1]
STRATEGIES = ["linear_probe", "freeze:k=2"]
STRATEGY_FOLDERS = {"linear_probe": "linear_probe", "freeze:k=2": "freeze-k2"}


def curve_args(pretrained: Path, out: Path, *extra) -> list:
    return ["transfer-curve", "--pretrained", pretrained, "--data", "digits:5-9", "--strategies",
            ",".join(STRATEGIES), "--seeds", str(len(SEEDS)), "--epochs", "1", "--max-train", "40", "--max-val", "20",
            "--source-data", "digits:0-4", "--out", out, *extra]


@pytest.fixture(scope="module")
def curve(digits_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curve") / "out"
    assert cli(curve_args(digits_run.path, out)) == 0
    return out


def run_metrics(curve: Path) -> dict[str, dict]:
    """metrics.json of every run under grids/, by run folder."""
    return {str(p.parent): load_json(p) for p in sorted(curve.glob("grids/*/runs/*/*/metrics.json"))}


def test_curve_writes_its_report_and_records_every_run(curve, digits_run):
    for name in ("report.md", "report.html", "results.json", "curve.csv", "curve.json", "plots/transfer_curve.png"):
        assert (curve / name).is_file(), name
    results = load_json(curve / "results.json")
    records = results["records"]
    expected = {(f"epoch_{e}", s, seed) for e in DIGITS_KEPT for s in STRATEGIES for seed in SEEDS}
    expected |= {("scratch", "scratch", seed) for seed in SEEDS}
    assert {(r["checkpoint"], r["strategy"], r["seed"]) for r in records} == expected and len(records) == 14
    assert results["notes"] == []
    metrics = run_metrics(curve)
    # every baseline recipe ran over every seed; the records hold the selected recipe's runs only
    assert len(metrics) == 12 + len(SCRATCH_SEARCH) * len(SEEDS)
    assert set(r["run_dir"] for r in records) <= set(metrics)
    selected = safe_name(results["scratch_choice"]["selected"])
    index = {e["epoch"]: e for e in load_json(digits_run.path / "checkpoints" / "index.json")["epochs"]}
    for r in records:
        m = metrics[r["run_dir"]]
        assert (r["val_accuracy"], r["val_n"]) == (m["val"]["accuracy"], m["val"]["n"]) and r["test_accuracy"] is None
        assert m["seed"] == r["seed"]
        folder = Path(r["run_dir"]).relative_to(curve)
        if r["checkpoint"] == "scratch":
            assert folder.parts[:4] == ("grids", "scratch", "runs", selected) and r["epoch"] is None
        else:
            assert folder.parts[:4] == ("grids", r["checkpoint"], "runs", STRATEGY_FOLDERS[r["strategy"]])
            assert m["strategy"] == r["strategy"]
            assert m["model"] == str((digits_run.path / "checkpoints" / r["checkpoint"]).resolve())
            assert r["source_val_accuracy"] == index[r["epoch"]]["val_accuracy"]
    report = (curve / "report.md").read_text()
    assert "scratch" in report and all(f"epoch_{e}" in report or f" {e} " in report for e in DIGITS_KEPT)


def test_one_scratch_grid_trains_the_baseline_recipes_per_seed_from_the_random_init(curve, digits_run):
    from transferlab.runs import build_model, read_run_config

    grid = load_json(curve / "grids" / "scratch" / "grid.json")
    assert grid["strategies"] == [] and grid["scratch"] and grid["scratch_init"] == "given"
    folders = {safe_name(scratch_name(r)): r for r in SCRATCH_SEARCH}
    assert sorted(p.name for p in (curve / "grids" / "scratch" / "runs").iterdir()) == sorted(folders)
    for grid in (curve / "grids").glob("epoch_*"):  # the baseline is trained once, not per checkpoint
        assert sorted(p.name for p in (grid / "runs").iterdir()) == sorted(STRATEGY_FOLDERS.values())
    scratch = str((digits_run.path / "checkpoints" / "scratch").resolve())
    starts = []
    base_lr = load_json(curve / "curve.json")["base"]["train"]["lr"]
    for folder, recipe in folders.items():
        for seed in SEEDS:
            config = read_run_config(curve / "grids" / "scratch" / "runs" / folder / str(seed))
            # the pre-training run's own random init, every parameter at the base rate, the recipe's settings
            assert (config.model, config.strategy, config.weights, config.train.seed) == \
                (scratch, "full:backbone_lr=1", None, seed)
            assert config.train.bn_stats == recipe["bn_stats"]
            assert config.train.lr == pytest.approx(base_lr * recipe["lr_scale"])
    for seed in SEEDS:
        config = read_run_config(curve / "grids" / "scratch" / "runs" / next(iter(folders)) / str(seed))
        starts.append(build_model(config).backbone.state_dict()["conv1.0.weight"])
    assert not torch.equal(*starts), "each seed is its own random draw"


def test_curve_csv_holds_each_points_mean_over_seeds_and_its_gap_to_scratch(curve):
    records = load_json(curve / "results.json")["records"]

    def mean(strategy, checkpoint):
        return statistics.mean(r["val_accuracy"] for r in records
                               if r["strategy"] == strategy and r["checkpoint"] == checkpoint)

    scratch = mean("scratch", "scratch")
    rows = list(csv.DictReader((curve / "curve.csv").read_text().splitlines()))
    points = {(r["strategy"], r["checkpoint"]): r for r in rows}
    for strategy in STRATEGIES:
        for epoch in DIGITS_KEPT:
            row = points[(strategy, f"epoch_{epoch}")]
            assert float(row["mean"]) == pytest.approx(mean(strategy, f"epoch_{epoch}"), abs=1e-12)
            assert float(row["gap"]) == pytest.approx(mean(strategy, f"epoch_{epoch}") - scratch, abs=1e-12)
            assert int(row["n"]) == len(SEEDS) and int(row["epoch"]) == epoch


def test_forgetting_along_the_curve(curve, digits_run):
    """Every fine-tuned run's source accuracy before is its checkpoint's own source validation accuracy (the same
    split as pre-training's); a linear probe forgets nothing; the rows are diagnose forgetting's."""
    from transferlab.diagnostics.forgetting import forgetting_for_run

    rows = load_json(curve / "results.json")["forgetting"]
    assert len(rows) == len(DIGITS_KEPT) * len(STRATEGIES) * len(SEEDS)
    val = {r["epoch"]: r["val_accuracy"] for r in history(digits_run.path)}
    for row in rows:
        assert row["split"] == "val"  # digits has no test split
        assert row["accuracy_before"] == pytest.approx(val[row["epoch"]], abs=1e-9)
        if row["strategy"] == "linear_probe":
            assert row["forgetting"] == 0
    assert any(row["forgetting"] != 0 for row in rows if row["strategy"] == "freeze:k=2")
    row = next(r for r in rows if r["strategy"] == "freeze:k=2" and r["epoch"] == 4 and r["seed"] == 1)
    run = curve / "grids" / "epoch_4" / "runs" / "freeze-k2" / "1"
    direct = forgetting_for_run(run, source_data="digits:0-4", split="val")
    assert (direct.accuracy_before, direct.accuracy_after, direct.examples) == \
        (row["accuracy_before"], row["accuracy_after"], row["examples"])


def test_resumed_curve_reruns_only_what_is_missing_with_the_same_numbers(curve, digits_run, tmp_path, capsys):
    out = Path(shutil.copytree(curve, tmp_path / "curve"))
    finished = out / "grids" / "epoch_2" / "runs" / "linear_probe" / "1"  # its metrics.json lost
    selected = safe_name(load_json(curve / "results.json")["scratch_choice"]["selected"])
    gone = [out / "grids" / "epoch_4" / "runs" / "freeze-k2" / "0", out / "grids" / "scratch" / "runs" / selected / "1"]
    before = {str(p.parent): strip_timing(load_json(p)) for p in out.glob("grids/*/runs/*/*/metrics.json")}
    (finished / "metrics.json").unlink()
    for folder in gone:
        shutil.rmtree(folder)
    untouched = [p.parent for p in out.glob("grids/*/runs/*/*/metrics.json")]
    assert len(untouched) == 12 + len(SCRATCH_SEARCH) * len(SEEDS) - 3
    kept = {str(p): snapshot(p) for p in untouched}

    code, _, err = run_cli(curve_args(digits_run.path, out, "--resume"), capsys)
    assert code == 0, err
    assert {str(p): snapshot(p) for p in untouched} == kept, "finished runs are not run again"
    after = {str(p.parent): strip_timing(load_json(p)) for p in out.glob("grids/*/runs/*/*/metrics.json")}
    assert after == before
    got, want = load_json(out / "results.json"), load_json(curve / "results.json")

    def comparable(results):
        return [{k: v for k, v in r.items() if k != "run_dir"} for r in results["records"]], results["summary"], \
            results["forgetting"]

    assert comparable(got) == comparable(want)
    assert (out / "curve.csv").read_text() == (curve / "curve.csv").read_text()


def test_a_curve_is_not_started_where_it_does_not_belong(curve, digits_run, digits_finetuned, tmp_path, capsys):
    run = digits_finetuned[0]
    cases = [
        (curve_args(digits_run.path, run), "not a transferlab transfer curve"),  # a run folder as --out
        (curve_args(digits_run.path, curve), "already holds a transfer curve; pass --resume"),
        (curve_args(digits_run.path, tmp_path / "new", "--resume"), "holds no transfer curve to continue"),
    ]
    for args, message in cases:
        folders = {p: snapshot(p) for p in (run, curve)}
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in error_line(err), args
        assert {p: snapshot(p) for p in (run, curve)} == folders
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("which, message", [
    ("finetune_run", "no kept checkpoints"),
    ("missing", "no such folder"),
    ("no_scratch", "no checkpoints/scratch"),
])
def test_transfer_curve_needs_a_pretrain_run(digits_run, digits_finetuned, tmp_path, capsys, which, message):
    pretrained = {"finetune_run": digits_finetuned[0], "missing": tmp_path / "nothing"}.get(which)
    if which == "no_scratch":
        pretrained = Path(shutil.copytree(digits_run.path, tmp_path / "run"))
        shutil.rmtree(pretrained / "checkpoints" / "scratch")
    out = tmp_path / "out"
    code, _, err = run_cli(curve_args(pretrained, out), capsys)
    assert code == 2 and message in error_line(err)
    assert not out.exists()


def test_a_bad_strategy_is_refused_before_anything_is_written(digits_run, tmp_path, capsys):
    out = tmp_path / "out"
    args = curve_args(digits_run.path, out)
    args[args.index("--strategies") + 1] = "linear_probe,magic"
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "magic" in error_line(err)
    assert not out.exists()
