"""`compare --jobs N`: the cells in N worker processes give the report a sequential grid gives, a failing cell
is recorded while the others finish, Ctrl-C stops the workers, and --jobs 0 is one error line."""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.compare.conftest import STRATEGIES, LogLines, grid_args, load_json
from tests.reliability.conftest import ROOT, default_sigint, error_line, run_cli, strip_keys, subprocess_env
from tests.reliability.test_compare_resume import GRID_TIMING
from transferlab.compare.executor import run_grid
from transferlab.compare.grid import FEATURE_CACHE, SCRATCH_SEARCH, GridSpec, safe_name, scratch_name, worker_threads

# STRATEGIES' freeze:k=50 fails at run time (too few groups); the baseline runs its 4 candidate recipes
CANDIDATES = [scratch_name(r) for r in SCRATCH_SEARCH]
FINISHED = ("linear_probe", "full", *CANDIDATES)
PLAN = ["linear_probe", "full", "freeze:k=50", *CANDIDATES]  # the cells in plan order: 7 with 1 seed



@pytest.fixture(scope="module")
def grids(tmp_path_factory, tiny_weights):
    """The same grid run with --jobs 2 and sequentially; the parent's grid log lines of the parallel one.

    One torch thread in the sequential grid, as each worker has (1 // 2 -> 1): with one thread the CPU kernels
    give the same bits in both, so the weights can be compared byte for byte."""
    from transferlab.cli import main

    root = tmp_path_factory.mktemp("jobs")
    grid_logger = logging.getLogger("transferlab.compare.grid")
    handler, level, threads = LogLines(), grid_logger.level, torch.get_num_threads()
    grid_logger.addHandler(handler)
    grid_logger.setLevel(logging.INFO)
    torch.set_num_threads(1)
    try:
        assert main(grid_args(root / "parallel", tiny_weights, STRATEGIES, "--jobs", "2")) == 0
        grid_logger.removeHandler(handler)
        assert main(grid_args(root / "sequential", tiny_weights)) == 0
    finally:
        grid_logger.removeHandler(handler)
        grid_logger.setLevel(level)
        torch.set_num_threads(threads)
    return root / "parallel", root / "sequential", handler.lines


def _strip(obj):
    return strip_keys(obj, GRID_TIMING)


def _json(path: Path, out: Path) -> str:
    return json.dumps(_strip(json.loads(path.read_text())), sort_keys=True).replace(str(out), "OUT")


def _csv(path: Path, out: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v.replace(str(out), "OUT") for k, v in row.items() if k not in GRID_TIMING}
                for row in csv.DictReader(fh)]


def test_parallel_grid_equals_sequential(grids):
    parallel, sequential, _ = grids
    assert _json(parallel / "results.json", parallel) == _json(sequential / "results.json", sequential)
    for name in ("results.csv", "runs.csv"):
        assert _csv(parallel / name, parallel) == _csv(sequential / name, sequential), name
    assert '"accuracy"' in _json(parallel / "results.json", parallel)  # real numbers were compared
    for strategy in FINISHED:  # same bits: one torch thread in every process (see `grids`)
        folder = Path("runs") / safe_name(strategy) / "0"
        for name in ("checkpoint/best.safetensors", "examples.safetensors"):
            assert (parallel / folder / name).read_bytes() == (sequential / folder / name).read_bytes(), (strategy,
                                                                                                        name)
    # both chose the same baseline recipe, one of the candidates
    choices = [load_json(grid / "results.json")["scratch_choice"]["selected"] for grid in (parallel, sequential)]
    assert choices[0] == choices[1] and choices[0] in CANDIDATES
    # the workers shared linear_probe's frozen-prefix entries through the disk store; sequential stays in memory
    assert list((parallel / FEATURE_CACHE).glob("*.safetensors"))
    assert not (sequential / FEATURE_CACHE).exists()


def test_failing_cell_is_recorded_and_the_others_finish(grids):
    parallel, _, lines = grids
    status = {r["strategy"]: r for r in load_json(parallel / "results.json")["runs"]}
    assert status["freeze:k=50"]["status"] == "failed" and "depth groups" in status["freeze:k=50"]["error"]
    assert (parallel / "runs" / safe_name("freeze:k=50") / "0" / "error.json").is_file()
    assert all(status[s]["status"] == "finished" for s in FINISHED)
    # the parent logs each cell as it comes back, with its number in plan order
    assert "2 worker processes x 1 torch thread(s) each (torch has 1 here)" in lines
    assert any(line.startswith("--jobs 2 is more than the 1 thread(s)") for line in lines)
    for i, label in enumerate(PLAN):
        assert any(line.startswith(f"run {i + 1}/7: {label} (seed 0) ") and " in " in line for line in lines), label
    assert not any(line.startswith("run 8/") for line in lines)


def test_threads_are_divided_among_the_jobs():
    assert [worker_threads(jobs, 8) for jobs in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_jobs_beyond_the_cells_left_are_reduced(grids, tmp_path, caplog):
    """Resuming the finished grid leaves one cell to run (the failed one): --jobs 3 runs it in this process."""
    parallel, _, _ = grids
    out = tmp_path / "copy"
    shutil.copytree(parallel, out)
    spec = GridSpec.from_dict(load_json(out / "grid.json"))
    with caplog.at_level(logging.INFO, logger="transferlab.compare"):
        results = run_grid(spec, out, resume=True, jobs=3)
    assert "--jobs 3: 1 run(s) to do, so 1 process(es)" in caplog.messages
    assert not any("worker processes" in m for m in caplog.messages)
    assert [r.status for r in results] == ["finished", "finished", "failed"] + ["finished"] * len(CANDIDATES)
    assert [r.cell.strategy for r in results] == PLAN


def test_jobs_below_one_is_one_error_line(tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(grid_args(out, tiny_weights, STRATEGIES, "--jobs", "0"), capsys)
    assert code == 2
    assert "--jobs must be >= 1" in error_line(err) and "got 0" in error_line(err)
    assert not out.exists()


def _start_long_grid(tmp_path, tiny_weights):
    """A --jobs 2 grid of 500-epoch cells in a subprocess: (the process, its stderr file)."""
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    args = [*grid_args(out, tiny_weights, "linear_probe,full", "--jobs", "2", "--no-scratch"), "--epochs", "500"]
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "transferlab", *args], env=subprocess_env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=fh, preexec_fn=default_sigint)
    return proc, log


# In the second set (make test-all): it trains two workers for up to a minute. It once did not exit within 180 s
# of SIGINT inside the full suite, never alone; the likely cause, an ignored SIGINT inherited from the test process
# (Python then installs no KeyboardInterrupt handler in the child), is ruled out by default_sigint.
@pytest.mark.slow
def test_ctrl_c_stops_the_workers(tmp_path, tiny_weights):
    """SIGINT to the parent while both workers train: it exits at once with the CLI's line, workers gone."""
    proc, log = _start_long_grid(tmp_path, tiny_weights)
    try:
        deadline = time.monotonic() + 120
        while "epoch 1/500" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert "epoch 1/500" in log.read_text(), log.read_text()
        children = [int(pid) for f in Path(f"/proc/{proc.pid}/task").glob("*/children")
                    for pid in f.read_text().split()]
        assert len(children) >= 2  # the workers (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=180) == 2  # seconds when idle; minutes when the machine is loaded
    finally:
        if proc.poll() is None:
            proc.kill()  # the workers die with it (PR_SET_PDEATHSIG), checked below
    err = log.read_text()
    assert "transferlab: error: interrupted; continue with --resume" in err and "Traceback" not in err, err
    time.sleep(1)
    alive = [pid for pid in children if _running(pid)]
    assert alive == [], f"worker processes left running: {alive}"


def test_workers_die_with_a_killed_grid(tmp_path, tiny_weights):
    """SIGKILL to the parent (nothing of it runs any more): the workers must not go on training as orphans."""
    proc, log = _start_long_grid(tmp_path, tiny_weights)
    children = []
    try:
        deadline = time.monotonic() + 120
        while "epoch 1/500" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        children = [int(pid) for f in Path(f"/proc/{proc.pid}/task").glob("*/children")
                    for pid in f.read_text().split()]
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in children if _running(pid)] == [], "workers outlived their killed grid"
    finally:
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its parent (gone) would reap it


def test_what_escapes_a_cell_comes_back_as_a_failed_cell(tmp_path, monkeypatch):
    """In the worker (an error around run_cell) and in the parent (a worker process that died)."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from transferlab.compare import grid

    cell = grid.Cell("full", 0, tmp_path / "runs" / "full" / "0", None)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(grid, "run_cell", broken)
    result = grid._worker_run_cell(None, cell, tmp_path, False, 0, 1)
    assert result.status == "failed" and "No space left" in result.error

    future = Future()
    future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
    result = grid._future_result(future, cell)
    assert result.status == "failed" and result.error.startswith("BrokenProcessPool: A process")
    assert load_json(cell.run_dir / "error.json")["error"] == result.error
