"""Disk full and out of memory during a run: a clear message, and the last good checkpoint intact."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.reliability.conftest import RUN_ARGS, STEPS_PER_EPOCH, assert_same_run, error_line, run_cli, \
    stale_temps, tensors_and_meta


def _epoch_of_last(run: Path) -> int:
    _, meta = tensors_and_meta(run / "checkpoint" / "last.safetensors")
    return json.loads(meta["trainer_state"])["epoch"]


def test_disk_full_while_writing_a_checkpoint(tmp_path, capsys, inject, finished_run):
    out = tmp_path / "run"
    inject("enospc_on_write:last.safetensors:2")  # epoch 2's checkpoint
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert "disk full" in line and "last.safetensors" in line and "--resume" in line
    assert _epoch_of_last(out) == 1, "epoch 1's checkpoint is intact"
    assert stale_temps(out) == [], "the half-written temporary file is removed"
    inject(None)
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert_same_run(out, finished_run)


def test_out_of_memory_names_the_step_and_checkpoint(tmp_path, capsys, inject):
    out = tmp_path / "run"
    inject(f"oom_at_step:{STEPS_PER_EPOCH + 2}")
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert f"out of memory at step {STEPS_PER_EPOCH + 2} (epoch 2)" in line
    assert str(out / "checkpoint" / "last.safetensors") in line and "--batch-size" in line
    assert _epoch_of_last(out) == 1


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MiB file system (needs root and mount permission; skipped otherwise)."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_real_full_disk(small_tmpfs, capsys, finished_run):
    """2 MiB hold epoch 1 (config, best 0.4 MB, last 1.3 MB) but not a second copy of a checkpoint."""
    out = small_tmpfs / "run"
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert "disk full while writing" in line and str(out) in line
    assert _epoch_of_last(out) == 1
    assert stale_temps(out) == []
    # more space, then --resume: the run ends exactly where an uninterrupted one does
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert_same_run(out, finished_run)
