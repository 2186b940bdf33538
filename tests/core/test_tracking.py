"""--track mlflow / --track tensorboard: what the trackers hold once the work is done, read back with their own
readers, equals the run folders' files (config.json, history.jsonl, metrics.json); a grid is one parent run with a
child per cell, and resuming it adds no duplicates; a bad spec or a missing package is one error line before any
training. What they hold while a run trains, resume, kills and failures: test_live_tracking.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli

SMALL = ["--model", TINY_IMAGE_MODEL, "--data", "digits:0-2", "--epochs", "2", "--max-train", "40",
         "--image-size", "32"]
GRID_STRATEGIES = "linear_probe,full"
INSTALL = 'pip install "transferlab[track]"'


# ---- the expected values, worked out here from the files (not with the code under test) ---------------------
def read_json(path: Path):
    return json.loads(path.read_text())


def read_history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def numbers(obj, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value by its dotted path (list items by index); booleans are not numbers."""
    if isinstance(obj, bool):
        return {}
    if isinstance(obj, (int, float)):
        return {prefix: float(obj)}
    if isinstance(obj, dict):
        pairs = obj.items()
    elif isinstance(obj, list):
        pairs = enumerate(obj)
    else:
        return {}
    out = {}
    for key, value in pairs:
        out.update(numbers(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def expected_params(config: dict) -> dict[str, str]:
    def text(value):
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": text(v) for k, v in value.items()})
        else:
            out[key] = text(value)
    return out


def expected_series(run: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric name: [(epoch, value)]} from history.jsonl."""
    series: dict[str, list] = {}
    for record in read_history(run):
        for key, value in numbers({k: v for k, v in record.items() if k != "epoch"}).items():
            series.setdefault(key, []).append((record["epoch"], value))
    return series


def mlflow_client(folder: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")


def active_runs(client) -> list:
    experiment = client.get_experiment_by_name("transferlab")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def assert_run_matches_folder(client, run, folder: Path) -> None:
    """Params = config.json, each metric's full history = history.jsonl, or metrics.json's numbers as final/<name>
    at the last epoch, nothing else."""
    assert run.data.params == expected_params(read_json(folder / "config.json"))
    final = {f"final/{k}": v for k, v in numbers(read_json(folder / "metrics.json")).items()}
    series = expected_series(folder)
    last = read_history(folder)[-1]["epoch"]
    assert set(run.data.metrics) == set(final) | set(series)
    for key, value in final.items():
        logged = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(last, value)], key
    for key, points in series.items():
        logged = client.get_metric_history(run.info.run_id, key)
        assert sorted((m.step, m.value) for m in logged) == points, key


# ---- shared runs ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One finetune run (full, 2 epochs) logged to both trackers: its folder."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("tracked") / "run"

    code = main(["finetune", *SMALL, "--strategy", "full", "--out", str(out), "--track", "mlflow",
                 "--track", "tensorboard"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def tracked_grid(tmp_path_factory):
    """2 strategies x 2 seeds (no scratch) logged to both trackers, then `compare --resume` (nothing to run):
    (grid folder, the run ids after the first logging)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("tracked_grid") / "grid"
    args = ["compare", *SMALL, "--strategies", GRID_STRATEGIES, "--seeds", "2", "--no-scratch", "--out", str(out),
            "--track", "mlflow", "--track", "tensorboard"]
    assert main(args) == 0
    first = sorted(r.info.run_id for r in active_runs(mlflow_client(out)))
    assert main([*args, "--resume"]) == 0
    return out, first


# ---- finetune --------------------------------------------------------------------------------------------
def test_finetune_mlflow_holds_the_run_files(tracked_run, tmp_path):
    db = tracked_run / "mlflow.db"
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"  # a real database in the run folder
    client = mlflow_client(tracked_run)
    (run,) = active_runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert_run_matches_folder(client, run, tracked_run)
    history = read_history(tracked_run)
    assert {"train_loss", "val_accuracy", "samples_per_second", "final/samples_per_second"} <= set(run.data.metrics)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")] == \
        [r["val_loss"] for r in history]
    assert run.data.metrics["final/val.accuracy"] == read_json(tracked_run / "metrics.json")["val"]["accuracy"]
    assert read_json(tracked_run / "tracking.json")["mlflow"][0]["run_id"] == run.info.run_id
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == \
        ["config.json", "history.jsonl", "metrics.json"]
    copy = Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path)))
    assert copy.read_bytes() == (tracked_run / "metrics.json").read_bytes()


def test_finetune_tensorboard_scalars_equal_history(tracked_run):
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard"))
    events.Reload()
    series = expected_series(tracked_run)
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(series)
    for key, points in series.items():  # TensorBoard stores scalars as float32
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(s, float(np.float32(v))) for s, v in points]
    metrics = read_json(tracked_run / "metrics.json")
    (final,) = events.Scalars("final/val.accuracy")
    assert final.value == float(np.float32(metrics["val"]["accuracy"])) and final.step == metrics["epochs_run"]


def test_a_failing_store_is_one_line_and_keeps_the_run(tmp_path, capsys):
    """A store that fails (here a file that is no database) stops its logging, not the run: the run finishes
    on disk, and the command ends with one error line after its summary."""
    (tmp_path / "broken.db").write_text("not a database\n" * 100)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["finetune", *SMALL, "--epochs", "1", "--out", str(out), "--track",
                                 f"mlflow:sqlite:///{tmp_path / 'broken.db'}"], capsys)
    line = error_line(err)
    assert code != 0 and "--track mlflow: logging to sqlite:///" in line and "broken.db failed: " in line
    assert (out / "metrics.json").is_file() and "run written to" in stdout


def test_only_rank_0_logs(tmp_path):
    """The trainer calls callbacks on rank 0 only; a LiveTracking whose hooks were never called (another rank)
    writes nothing when its block ends."""
    from transferlab.tracking import parse_tracks
    from transferlab.tracking.live import LiveTracking
    from transferlab.training.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.callbacks = [LiveTracking(parse_tracks(["mlflow", "tensorboard"]))]
    trainer.world = type("World", (), {"is_main": False})()
    assert trainer._callbacks() == []
    with trainer.callbacks[0] as tracker:
        pass
    assert tracker.lines() == [] and not any(tmp_path.iterdir())


# ---- compare ---------------------------------------------------------------------------------------------
def test_grid_is_one_parent_with_a_child_per_cell(tracked_grid):
    out, first = tracked_grid
    client = mlflow_client(out)
    runs = active_runs(client)
    assert sorted(r.info.run_id for r in runs) == first  # compare --resume added nothing
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (parent,) = parents
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    grid = read_json(out / "grid.json")
    assert json.loads(parent.data.params["strategies"]) == grid["strategies"] == GRID_STRATEGIES.split(",")
    assert json.loads(parent.data.params["seeds"]) == grid["seeds"] == [0, 1]
    cells = set()
    for child in children:
        cell = out / child.data.tags["transferlab.cell"]
        cells.add((child.data.tags["transferlab.strategy"], int(child.data.tags["transferlab.seed"])))
        assert cell.parent.parent == out / "runs"
        assert_run_matches_folder(client, child, cell)  # every number of the cell's metrics.json
    assert cells == {(s, seed) for s in GRID_STRATEGIES.split(",") for seed in (0, 1)}
    artefacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "results.csv", "results.json", "runs.csv", "plots"} <= artefacts
    summary = read_json(out / "results.json")["summary"]
    for strategy in GRID_STRATEGIES.split(","):  # each strategy's mean numbers, as the report has them
        assert parent.data.metrics[f"{strategy}.val_accuracy"] == summary[strategy]["mean"]["val_accuracy"]
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots and sorted(Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")) == plots


def test_grid_tensorboard_has_a_folder_per_cell(tracked_grid):
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = tracked_grid
    for strategy in GRID_STRATEGIES.split(","):
        for seed in (0, 1):
            events = EventAccumulator(str(out / "tensorboard" / strategy / str(seed)))
            events.Reload()
            for key, points in expected_series(out / "runs" / strategy / str(seed)).items():
                assert [(e.step, e.value) for e in events.Scalars(key)] == \
                    [(s, float(np.float32(v))) for s, v in points], (strategy, seed, key)
            # compare --resume: the finished cells are not run again, nothing more written
            assert len(list((out / "tensorboard" / strategy / str(seed)).glob("events.out.tfevents.*"))) == 1


# ---- errors: one line, before any work --------------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    ("foo", "unknown tracker"),
    ("mlflow:", "nothing after 'mlflow:'"),
    ("tensorboard: ", "nothing after 'tensorboard:'"),
    ("mlflow:sqlite:///", "names no database file"),
    ("mlflow:sqlite:////no/such/folder/mlflow.db", "the folder /no/such/folder does not exist"),
])
@pytest.mark.parametrize("command", ["finetune", "compare"])
def test_bad_spec_is_one_line(capsys, tmp_path, spec, message, command):
    out = tmp_path / "out"
    extra = ["--strategies", "linear_probe", "--no-scratch"] if command == "compare" else []
    code, _, err = run_cli([command, *SMALL, *extra, "--out", str(out), "--track", spec], capsys)
    assert code == 2 and message in error_line(err)
    assert not out.exists()  # nothing was trained


@pytest.mark.parametrize("package", ["mlflow", "tensorboard"])
@pytest.mark.parametrize("command", ["finetune", "compare"])
def test_missing_package_names_the_extra(capsys, tmp_path, monkeypatch, package, command):
    monkeypatch.setitem(sys.modules, package, None)  # `import mlflow` now raises ImportError
    out = tmp_path / "out"
    extra = ["--strategies", "linear_probe", "--no-scratch"] if command == "compare" else []
    code, _, err = run_cli([command, *SMALL, *extra, "--out", str(out), "--track", package], capsys)
    line = error_line(err)
    assert code == 2 and f"--track {package} needs the {package} package" in line and INSTALL in line
    assert not out.exists()
