"""Early stopping: `--patience` stops a run, and a run killed after its stopping epoch resumes to exactly the
uninterrupted run (the loop re-checks the stopping condition it restored, instead of training on)."""
from __future__ import annotations

import json
import signal

from tests.reliability.conftest import RUN_ARGS, assert_same_run, run_subprocess

# SGD at 1e-30 leaves every float32 weight as it is, so validation never improves after epoch 1: with
# patience 1 the run stops after epoch 2 of 4, whatever the hardware.
STOPPING = [*RUN_ARGS[:-1], "4", "--optimizer", "sgd", "--lr", "1e-30", "--patience", "1"]


def test_patience_stops_the_run(tmp_path):
    out = tmp_path / "run"
    proc = run_subprocess(["finetune", *STOPPING, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] == 1
    assert len((out / "history.jsonl").read_text().splitlines()) == 2


def test_killed_after_the_stopping_epoch_resumes_to_the_same_metrics(tmp_path):
    baseline, run = tmp_path / "baseline", tmp_path / "run"
    assert run_subprocess(["finetune", *STOPPING, "--out", str(baseline)]).returncode == 0
    # killed inside the final metrics.json write: the stopping epoch's checkpoint is in place, no metrics
    proc = run_subprocess(["finetune", *STOPPING, "--out", str(run)], fault="kill_during_write:metrics.json:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (run / "metrics.json").exists()
    proc = run_subprocess(["finetune", *STOPPING, "--out", str(run), "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    assert_same_run(run, baseline)
