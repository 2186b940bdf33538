"""--track while the run trains: a run is visible in MLflow (RUNNING, its epochs so far) and in TensorBoard before
it ends; a killed run resumed with --resume continues the same MLflow run; a failing run is FAILED; runs of other
folders or experiments are never touched; a grid with --jobs 2 is a parent run with a child per cell.

A subprocess is paused before a step with the test-only fault `pause_at_step` (faults.py) until this test
creates the release file, so "before the end" is a fact, not a timing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_IMAGE_MODEL, run_cli

pytest.importorskip("mlflow")

# 40 examples in batches of 8: 5 steps per epoch at most, so step 6 comes after epoch 1 and before epoch 2 ends
SMALL = ["--model", TINY_IMAGE_MODEL, "--data", "digits:0-2", "--image-size", "16", "--max-train", "40",
         "--batch-size", "8"]
WAIT_S = 180


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_runs(client, experiment: str = "transferlab") -> list:
    from mlflow.entities import ViewType

    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000)


def steps(client, run_id: str, key: str = "val_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def start(tmp_path: Path, args: list[str], fault: str) -> tuple[subprocess.Popen, Path]:
    """`transferlab ARGS` in a subprocess with TRANSFERLAB_FAULT=fault; (process, the release file)."""
    release = tmp_path / "release"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERLAB_FAULT": fault,
           "TRANSFERLAB_FAULT_RELEASE": str(release)}
    proc = subprocess.Popen([sys.executable, "-m", "transferlab", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, release


def wait_for(condition, proc: subprocess.Popen, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {what} within {WAIT_S} s")


def tracked_run_id(run: Path) -> str | None:
    """The MLflow run id in the run folder's tracking.json, once the run has written it."""
    try:
        return json.loads((run / "tracking.json").read_text())["mlflow"][0]["run_id"]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def test_mlflow_run_is_visible_while_it_trains(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    run = tmp_path / "run"
    proc, release = start(tmp_path, ["finetune", *SMALL, "--epochs", "3", "--out", str(run), "--track",
                                     f"mlflow:{uri}"], "pause_at_step:6")
    run_id = wait_for(lambda: tracked_run_id(run), proc, "tracking.json")
    client = client_for(uri)
    wait_for(lambda: steps(client, run_id), proc, "epoch 1's metrics")
    during = client.get_run(run_id)  # the process waits before step 6: epoch 1 is logged, epoch 3 is not
    assert during.info.status == "RUNNING" and steps(client, run_id) == [1]
    assert during.data.params["model"] == TINY_IMAGE_MODEL and during.data.params["train.epochs"] == "3"
    assert not (run / "metrics.json").exists()
    release.touch()
    assert proc.wait(WAIT_S) == 0, proc.stderr.read()[-2000:]
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and steps(client, run_id) == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert after.data.metrics["final/val.accuracy"] == metrics["val"]["accuracy"]
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["config.json", "history.jsonl", "metrics.json"]
    assert [r.info.run_id for r in all_runs(client)] == [run_id]


def test_tensorboard_events_appear_after_epoch_1(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    proc, release = start(tmp_path, ["finetune", *SMALL, "--epochs", "2", "--out", str(run), "--track",
                                     "tensorboard"], "pause_at_step:6")

    def epochs_written() -> list[int]:
        if not (run / "tensorboard").is_dir():
            return []
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        return [e.step for e in events.Scalars("train_loss")] if "train_loss" in events.Tags()["scalars"] else []

    assert wait_for(epochs_written, proc, "epoch 1's event") == [1]
    assert not (run / "metrics.json").exists()
    release.touch()
    assert proc.wait(WAIT_S) == 0, proc.stderr.read()[-2000:]
    assert epochs_written() == [1, 2]


def test_killed_run_resumed_is_one_mlflow_run(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    run = tmp_path / "run"
    args = ["finetune", *SMALL, "--epochs", "3", "--out", str(run), "--track", f"mlflow:{uri}"]
    proc, _ = start(tmp_path, args, "kill_at_step:11")  # SIGKILL in epoch 3, after epochs 1 and 2 were logged
    assert proc.wait(WAIT_S) == -9
    run_id = tracked_run_id(run)
    client = client_for(uri)
    assert client.get_run(run_id).info.status == "RUNNING" and steps(client, run_id) == [1, 2]
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert tracked_run_id(run) == run_id
    (only,) = all_runs(client)
    assert only.info.run_id == run_id and only.info.status == "FINISHED"
    assert steps(client, run_id) == [1, 2, 3] and steps(client, run_id, "train_loss") == [1, 2, 3]  # each once


def test_training_error_marks_the_run_failed(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    run = tmp_path / "run"
    monkeypatch.setenv("TRANSFERLAB_FAULT", "nan_at_step:7")  # a non-finite loss in epoch 2 stops the run
    code, _, err = run_cli(["finetune", *SMALL, "--epochs", "2", "--out", str(run), "--track", f"mlflow:{uri}"],
                           capsys)
    assert code != 0 and "became nan" in err
    client = client_for(uri)
    failed = client.get_run(tracked_run_id(run))
    assert failed.info.status == "FAILED" and steps(client, failed.info.run_id) == [1]


def test_runs_of_other_folders_are_never_touched(tmp_path, capsys):
    """Runs in the store with this folder's path tag (another user's /tmp/run; the same path in another
    experiment) stay as they are, and --overwrite makes a new MLflow run without deleting the old one."""
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    run = tmp_path / "run"
    client = client_for(uri)
    theirs, other = (client.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
                     for name in ("transferlab", "other"))
    tags = {"transferlab.kind": "run", "transferlab.folder": str(run.resolve())}
    foreign = [client.create_run(e, tags=tags).info.run_id for e in (theirs, other)]
    args = ["finetune", *SMALL, "--epochs", "1", "--out", str(run), "--track", f"mlflow:{uri}"]
    assert run_cli(args, capsys)[0] == 0
    first = tracked_run_id(run)
    assert run_cli([*args, "--overwrite"], capsys)[0] == 0
    second = tracked_run_id(run)
    assert second != first
    for run_id in (*foreign, first, second):
        assert client.get_run(run_id).info.lifecycle_stage == "active", run_id
    for run_id in foreign:
        assert client.get_run(run_id).info.status == "RUNNING"  # as they were made: nothing logged to them
    assert {r.info.run_id for r in all_runs(client)} == {foreign[0], first, second}


def test_grid_with_jobs_is_a_parent_with_a_child_per_cell(tmp_path, capsys):
    out = tmp_path / "grid"
    code, _, err = run_cli(["compare", *SMALL, "--epochs", "1", "--strategies", "linear_probe,full", "--seeds", "1",
                            "--no-scratch", "--jobs", "2", "--out", str(out), "--track", "mlflow"], capsys)
    assert code == 0, err
    uri = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    client = client_for(uri)
    runs = all_runs(client)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert json.loads((out / "tracking.json").read_text())["mlflow"][0]["run_id"] == parent.info.run_id
    for child in children:
        cell = out / child.data.tags["transferlab.cell"]
        assert tracked_run_id(cell) == child.info.run_id
        assert child.info.status == "FINISHED" and steps(client, child.info.run_id) == [1]
    assert parent.info.status == "FINISHED"
    assert "report.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
