"""Atomic outputs, and a finished run is never overwritten without --overwrite."""
from __future__ import annotations

import os
import stat

import pytest

from tests.reliability.conftest import RUN_ARGS, error_line, run_cli, snapshot
from transferlab import faults
from transferlab.safe_io import atomic_write_bytes, remove_stale_temps


def test_finished_run_is_not_overwritten(run_copy, capsys):
    before = snapshot(run_copy)
    for extra in ([], ["--resume"], ["--strategy", "linear_probe", "--epochs", "1"]):
        code, out, err = run_cli(["finetune", *RUN_ARGS, *extra, "--out", str(run_copy)], capsys)
        assert code == 2
        assert "finished run" in error_line(err) and "--overwrite" in err
        assert err.strip().count("\n") == 0, err  # one line, nothing else
        assert snapshot(run_copy) == before, "files must be untouched (bytes and mtimes)"


def test_unfinished_run_needs_resume_or_overwrite(run_copy, capsys):
    (run_copy / "metrics.json").unlink()
    before = snapshot(run_copy)
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(run_copy)], capsys)
    assert code == 2 and "--resume" in error_line(err)
    assert snapshot(run_copy) == before


def test_overwrite_replaces_a_finished_run(run_copy, capsys):
    code, _, err = run_cli(["finetune", *RUN_ARGS[:-1], "1", "--out", str(run_copy), "--overwrite"], capsys)
    assert code == 0, err
    assert '"epochs_run": 1' in (run_copy / "metrics.json").read_text()


def test_outputs_get_normal_permissions(finished_run):
    """The temporary files are 0600 (mkstemp); the outputs renamed from them must follow the umask."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [finished_run / "metrics.json", finished_run / "checkpoint" / "best.safetensors"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, inject):
    target = tmp_path / "metrics.json"
    target.write_bytes(b"old")
    inject("enospc_on_write:metrics.json:1")
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new" * 1000)
    assert info.value.errno == 28 and info.value.filename == str(target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".last.safetensors.abc123.transferlab-tmp").write_bytes(b"torn")
    (tmp_path / ".user-file.tmp").write_bytes(b"not ours")
    (tmp_path / "last.safetensors").write_bytes(b"kept")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".last.safetensors.abc123.transferlab-tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".user-file.tmp", "last.safetensors"]


def test_fault_spec_typo_is_an_error(inject):
    inject("kill_during_wirte:1")
    with pytest.raises(ValueError, match="TRANSFERLAB_FAULT"):
        faults.on_step(1)
