"""A `transferlab compare` grid killed (SIGKILL) inside a cell's checkpoint write and inside the report write,
then continued with --resume, ends with the same runs and numbers as a grid that ran straight through."""
from __future__ import annotations

import json
import signal

from tests.reliability.conftest import assert_same_run, run_cli, run_subprocess, stale_temps, strip_keys

GRID_ARGS = ["compare", "--model", "test_efficientnet", "--data", "digits", "--image-size", "32", "--max-train",
             "200", "--epochs", "2", "--batch-size", "32", "--strategies", "linear_probe,full", "--no-scratch"]
# Fields that hold wall-clock measurements in the grid's result files, on top of the runs' own.
GRID_TIMING = {"seconds", "wall_seconds", "train_seconds", "samples_per_second", "peak_memory_mb",
               "peak_memory_mb_mean", "peak_memory_mb_std", "train_seconds_mean", "train_seconds_std",
               "samples_per_second_mean", "samples_per_second_std"}


def _strip(obj):
    return strip_keys(obj, GRID_TIMING)


def test_killed_grid_resumes_to_the_same_results(tmp_path, capsys):
    base, run = tmp_path / "base", tmp_path / "grid"
    code, _, err = run_cli([*GRID_ARGS, "--out", str(base)], capsys)
    assert code == 0, err

    # killed inside the 2nd cell's first checkpoint write (cell 1 finished, cell 2 has config.json only)
    proc = run_subprocess([*GRID_ARGS, "--out", str(run)], fault="kill_during_write:last.safetensors:3")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # killed again inside the report write, after every cell finished
    proc = run_subprocess([*GRID_ARGS, "--out", str(run), "--resume"], fault="kill_during_write:report.md:1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (run / "report.md").exists()

    code, _, err = run_cli([*GRID_ARGS, "--out", str(run), "--resume"], capsys)
    assert code == 0, err
    cells = sorted(p.relative_to(base) for p in (base / "runs").glob("*/*"))
    assert cells == sorted(p.relative_to(run) for p in (run / "runs").glob("*/*")) and len(cells) == 2
    for cell in cells:
        assert_same_run(run / cell, base / cell)
        assert stale_temps(run / cell) == []
    got = _strip(json.loads((run / "results.json").read_text()))
    want = _strip(json.loads((base / "results.json").read_text()))
    assert json.dumps(got, sort_keys=True).replace(str(run), "OUT") == \
        json.dumps(want, sort_keys=True).replace(str(base), "OUT")
    assert '"accuracy"' in json.dumps(got)  # the comparison above compared real numbers
