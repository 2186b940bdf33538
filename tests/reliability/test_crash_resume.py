"""A real `transferlab finetune` process is SIGKILLed at several points; `--resume` must end bit for bit
where an uninterrupted run ends. The kills come from TRANSFERLAB_FAULT (transferlab/faults.py), so each lands
at an exact point: mid-epoch, right after an epoch, inside checkpoint writes (after the temporary file is
complete, before the rename), inside the final metrics.json write. The chain resumes one run five times."""
from __future__ import annotations

import json
import signal

from safetensors import safe_open

from tests.reliability.conftest import RUN_ARGS, STEPS_PER_EPOCH, assert_same_run, run_subprocess, stale_temps

KILLED = -signal.SIGKILL


def _epochs_in_last(run) -> int:
    with safe_open(str(run / "checkpoint" / "last.safetensors"), framework="pt") as fh:
        return json.loads(fh.metadata()["trainer_state"])["epoch"]


def test_killed_five_times_then_resumed_equals_uninterrupted_run(tmp_path, finished_run):
    run = tmp_path / "run"
    finetune = ["finetune", *RUN_ARGS, "--out", str(run)]

    # 1. right after epoch 1 is complete (history.jsonl is its last write)
    proc = run_subprocess(finetune, fault="kill_after_write:history.jsonl:1")
    assert proc.returncode == KILLED, proc.stderr
    assert _epochs_in_last(run) == 1 and not (run / "metrics.json").exists()

    # 2. mid-epoch: before the 3rd step of epoch 2 (the epoch is redone from the epoch-1 checkpoint)
    proc = run_subprocess([*finetune, "--resume"], fault=f"kill_at_step:{STEPS_PER_EPOCH + 3}")
    assert proc.returncode == KILLED, proc.stderr
    assert _epochs_in_last(run) == 1

    # 3. inside the write of epoch 2's checkpoint: the temporary file is complete but not yet renamed
    proc = run_subprocess([*finetune, "--resume"], fault="kill_during_write:last.safetensors:1")
    assert proc.returncode == KILLED, proc.stderr
    assert _epochs_in_last(run) == 1, "the old checkpoint must still be the one in place"
    assert any(p.name.startswith(".last.safetensors.") for p in stale_temps(run))

    # 4. inside a write of best.safetensors (epoch 2 or 3, whichever improves first in this process)
    proc = run_subprocess([*finetune, "--resume"], fault="kill_during_write:best.safetensors:1")
    assert proc.returncode == KILLED, proc.stderr
    assert not (run / "metrics.json").exists()

    # 5. inside the final metrics.json write: all epochs are done, the run is not yet marked finished
    proc = run_subprocess([*finetune, "--resume"], fault="kill_during_write:metrics.json:1")
    assert proc.returncode == KILLED, proc.stderr
    assert not (run / "metrics.json").exists() and _epochs_in_last(run) == 3

    proc = run_subprocess([*finetune, "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert stale_temps(run) == [], "temporary files of interrupted writes are cleaned up on resume"
    assert_same_run(run, finished_run)  # the uninterrupted run (made in-process, also one thread)


def test_killed_mid_epoch_resumes_from_the_mid_epoch_checkpoint(tmp_path):
    """--checkpoint-every-steps 3: killed before step 12 (epoch 2, its 5th batch), the run resumes from the
    checkpoint of step 9 (inside epoch 2) and ends bit for bit like the same run uninterrupted."""
    every = ["--checkpoint-every-steps", "3"]
    baseline, run = tmp_path / "baseline", tmp_path / "run"
    assert run_subprocess(["finetune", *RUN_ARGS, *every, "--out", str(baseline)]).returncode == 0
    proc = run_subprocess(["finetune", *RUN_ARGS, *every, "--out", str(run)], fault="kill_at_step:12")
    assert proc.returncode == KILLED, proc.stderr
    with safe_open(str(run / "checkpoint" / "last.safetensors"), framework="pt") as fh:
        state = json.loads(fh.metadata()["trainer_state"])
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (1, 9, 2), state
    proc = run_subprocess(["finetune", *RUN_ARGS, *every, "--out", str(run), "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(run, baseline)


def test_workers_change_nothing(tmp_path, finished_run):
    """Two DataLoader worker processes read and augment the examples: each example's augmentation comes from
    its own seed, so the run equals the one made in the training process."""
    from tests.reliability.conftest import strip_timing

    run = tmp_path / "run"
    proc = run_subprocess(["finetune", *RUN_ARGS, "--workers", "2", "--out", str(run)])
    assert proc.returncode == 0, proc.stderr
    assert (run / "checkpoint" / "best.safetensors").read_bytes() == \
        (finished_run / "checkpoint" / "best.safetensors").read_bytes()
    got = [strip_timing(json.loads(ln)) for ln in (run / "history.jsonl").read_text().splitlines()]
    want = [strip_timing(json.loads(ln)) for ln in (finished_run / "history.jsonl").read_text().splitlines()]
    assert got == want
