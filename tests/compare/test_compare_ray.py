"""`compare --executor ray`: the cells as Ray tasks on a local Ray instance give the report a local grid gives,
a finished cell is kept and a failing one recorded while the others finish, Ctrl-C cancels the tasks, and bad
input (no Ray, nobody at --address, options that do not fit together) is one error line.

Ray starts once in this module (it costs ~10-20 s here: the instance, then workers importing torch), inside the
`grids` fixture, and is shut down by the code under test; its session files go to a folder under pytest's
temporary folder (RAY_TMPDIR), and RAY_AUTH_MODE=disabled keeps Ray from writing a token to ~/.ray.
Multi-node clusters are not tested here (docs/distributed.md).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import shutil
import socket
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
import torch

from tests.compare.conftest import STRATEGIES, LogLines, grid_args, load_json
from tests.conftest import error_line, run_cli
from tests.reliability.conftest import strip_keys
from tests.reliability.test_compare_resume import GRID_TIMING
from transferlab.compare.grid import FEATURE_CACHE, Cell, safe_name

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='Ray is not installed (pip install "transferlab[cluster]"; make test does)')
SEEDS = ["--seeds", "2", "--no-scratch"]  # STRATEGIES x 2 seeds: linear_probe, full and freeze:k=50 (fails)
KEPT = Path("runs") / "linear_probe" / "0"  # finished before the Ray run, kept by it
RECOMPUTED = [Path("runs") / s / str(seed) for s, seed in (("linear_probe", 1), ("full", 0), ("full", 1))]



def _ray_tmpdir(tmp_path_factory) -> tuple[Path, bool]:
    """A folder for Ray's session files; Ray's socket paths below it must stay under 107 bytes, so a long pytest
    base folder falls back to a short one in /tmp (removed afterwards). (folder, whether it is a fallback)."""
    folder = tmp_path_factory.mktemp("ray")
    if len(str(folder)) <= 40:
        return folder, False
    return Path(tempfile.mkdtemp(prefix="tl-ray-")), True


def _ray_processes(folder: Path) -> list[int]:
    """The pids of processes whose command line names `folder` (Ray's raylet, GCS server, workers' logs)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def grids(tmp_path_factory, tiny_weights):
    """The grid run cell after cell in this process, and the same grid continued with --executor ray on a local
    instance that run_on_ray starts (2 CPUs) from a copy where
    only linear_probe seed 0 had finished. Returns (ray grid, local grid, log lines, kept cell's mtime,
    Ray's folder, whether Ray was still up after the run).

    One torch thread in the local grid, as each Ray task has (--cpus-per-cell 1): the same CPU kernels, so the
    weights can be compared byte for byte."""
    import ray

    from transferlab.cli import main

    root = tmp_path_factory.mktemp("ray_grid")
    local, on_ray = root / "local", root / "ray"
    ray_dir, fallback = _ray_tmpdir(tmp_path_factory)
    compare_logger = logging.getLogger("transferlab.compare")
    handler, level, threads = LogLines(), compare_logger.level, torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(ray_dir))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        try:
            torch.set_num_threads(1)
            assert main(grid_args(local, tiny_weights, STRATEGIES, *SEEDS)) == 0
            shutil.copytree(local, on_ray)
            for path in [*(on_ray / "runs").glob("*/*"), *on_ray.glob("report*"), *on_ray.glob("*.csv"),
                         on_ray / "results.json", on_ray / "plots"]:
                if path.relative_to(on_ray) != KEPT:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            kept_mtime = (on_ray / KEPT / "metrics.json").stat().st_mtime_ns
            compare_logger.addHandler(handler)
            compare_logger.setLevel(logging.INFO)
            # run_on_ray sizes its local instance by torch's threads: 2 CPUs, while this process keeps 1 thread
            # (the report's diagnostics, computed here, then match the local grid's to the bit)
            mp.setattr(torch, "get_num_threads", lambda: 2)
            assert main(grid_args(on_ray, tiny_weights, STRATEGIES, *SEEDS, "--resume", "--executor", "ray")) == 0
            still_up = ray.is_initialized()
        finally:
            compare_logger.removeHandler(handler)
            compare_logger.setLevel(level)
            torch.set_num_threads(threads)
            if ray.is_initialized():  # only after a failure above: run_on_ray shuts down what it started
                ray.shutdown()
    yield on_ray, local, handler.lines, kept_mtime, ray_dir, still_up
    if fallback:
        shutil.rmtree(ray_dir, ignore_errors=True)


def _texts(path: Path, *outs: Path) -> str:
    text = path.read_text()
    for out in outs:
        text = text.replace(str(out), "OUT")
    return text


def _json(path: Path, *outs: Path):
    return strip_keys(json.loads(_texts(path, *outs)), GRID_TIMING)


def _csv(path: Path, *outs: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in GRID_TIMING}
            for row in csv.DictReader(_texts(path, *outs).splitlines())]


@needs_ray
def test_ray_grid_equals_local(grids):
    on_ray, local, _, _, _, _ = grids
    # the kept cell's files were copied from the local grid, so its paths name that folder: both become OUT
    assert _json(on_ray / "results.json", on_ray, local) == _json(local / "results.json", local)
    for name in ("results.csv", "runs.csv"):
        assert _csv(on_ray / name, on_ray, local) == _csv(local / name, local), name
    rows = {(r["strategy"], r["seed"]): r for r in load_json(on_ray / "results.json")["runs"]}
    assert rows[("full", 1)]["status"] == "finished" and rows[("full", 1)]["values"]["val_accuracy"] > 0  # compared
    for run in RECOMPUTED:  # same bits: one torch thread in each task and in the local grid
        best = run / "checkpoint" / "best.safetensors"
        assert (on_ray / best).read_bytes() == (local / best).read_bytes(), run
    # the tasks shared linear_probe's frozen-prefix entries through DIR/feature_cache, as --jobs workers do
    assert list((on_ray / FEATURE_CACHE).glob("*.safetensors"))


@needs_ray
def test_finished_cell_is_kept_and_failing_cell_is_recorded(grids):
    on_ray, _, lines, kept_mtime, _, _ = grids
    assert (on_ray / KEPT / "metrics.json").stat().st_mtime_ns == kept_mtime
    assert "linear_probe (seed 0): finished earlier, kept" in lines  # logged here: kept without a task
    status = {(r["strategy"], r["seed"]): r for r in load_json(on_ray / "results.json")["runs"]}
    for seed in (0, 1):
        failed = status[("freeze:k=50", seed)]
        assert failed["status"] == "failed" and "depth groups" in failed["error"]
        error_file = on_ray / "runs" / safe_name("freeze:k=50") / str(seed) / "error.json"  # written by the task
        assert "depth groups" in load_json(error_file)["error"]
    assert all(status[(s, seed)]["status"] == "finished" for s in ("linear_probe", "full") for seed in (0, 1))


@needs_ray
def test_progress_lines_and_ray_is_shut_down(grids):
    _, _, lines, _, ray_dir, still_up = grids
    assert "Ray: 2 cell(s) at a time, 1 CPU(s) each" in lines
    for i, label in enumerate(["linear_probe (seed 0)", "linear_probe (seed 1)", "full (seed 0)", "full (seed 1)",
                               "freeze:k=50 (seed 0)", "freeze:k=50 (seed 1)"]):
        assert any(line.startswith(f"run {i + 1}/6: {label} ") and " in " in line for line in lines), label
    assert not still_up  # run_on_ray shut down the instance it started
    deadline = time.monotonic() + 20
    while _ray_processes(ray_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ray_processes(ray_dir) == [], "Ray processes left running"
    assert list(ray_dir.glob("ray/session_*")), "Ray's session files were not under the test's folder"


@needs_ray
def test_a_task_that_died_comes_back_as_a_failed_cell(tmp_path):
    """The error classes Ray raises from ray.get: the worker process died, or the task raised around run_cell."""
    import ray

    from transferlab.compare.ray_executor import _task_result

    cell = Cell("full", 0, tmp_path / "runs" / "full" / "0", None)
    for error, expected in ((ray.exceptions.WorkerCrashedError(), "WorkerCrashedError: The worker died"),
                            (ray.exceptions.RayTaskError("_run_cell_task", "Traceback ...", OSError(28, "No space")),
                             "OSError: [Errno 28] No space")):
        def get(ref, error=error):
            raise error

        result = _task_result(types.SimpleNamespace(get=get, exceptions=ray.exceptions), "ref", cell)
        assert result.status == "failed" and result.error.startswith(expected), result.error
        assert load_json(cell.run_dir / "error.json")["error"] == result.error


class _FakeRay:
    """Enough of ray's API for run_on_ray's loop: the first wait is interrupted (Ctrl-C)."""

    class exceptions:
        RayError = RayTaskError = type("RayError", (Exception,), {})

    def __init__(self):
        self.cancelled, self.shut_down, self.submitted = [], False, []
        self.initialized = False

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.initialized, self.init_kwargs = True, kwargs

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def remote(self, **options):
        fake = self
        self.task_options = options

        class Task:
            def remote(self, spec, cell, *args):
                fake.submitted.append(cell.label)
                return f"ref-{cell.label}"

        return lambda fn: Task()

    def put(self, value):
        return value

    def wait(self, refs, num_returns, timeout):
        raise KeyboardInterrupt

    def cancel(self, ref, force=False):
        self.cancelled.append((ref, force))

    def shutdown(self):
        self.shut_down = True


def test_ctrl_c_cancels_the_tasks_and_stops_what_it_started(tmp_path, tiny_weights, monkeypatch):
    from tests.conftest import TINY_IMAGE_MODEL
    from transferlab.compare.grid import grid_spec, plan
    from transferlab.compare.ray_executor import run_on_ray

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    spec = grid_spec(model=TINY_IMAGE_MODEL, data="digits:0-2", strategies="linear_probe,full", seeds=1,
                     scratch=False, weights=str(tiny_weights), image_size=32)
    cells = plan(spec, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_on_ray(spec, cells, tmp_path, resume=False, cpus_per_cell=2)
    assert fake.submitted == ["linear_probe (seed 0)", "full (seed 0)"]
    assert fake.cancelled == [("ref-linear_probe (seed 0)", True), ("ref-full (seed 0)", True)]
    assert fake.shut_down  # the local instance it started
    assert fake.init_kwargs["num_cpus"] == 2 and fake.init_kwargs["include_dashboard"] is False
    assert fake.task_options == {"num_cpus": 2, "num_gpus": 0, "max_retries": 0}


def test_without_ray_is_one_line_naming_the_extra(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    code, _, err = run_cli(grid_args(out, tiny_weights, STRATEGIES, "--executor", "ray"), capsys)
    assert code == 2
    assert 'pip install "transferlab[cluster]"' in error_line(err)
    assert not out.exists()  # refused before the grid folder was written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on return: nobody listens there


@needs_ray
def test_unreachable_address_is_one_line_quickly(tmp_path, tiny_weights, capsys):
    port, out = _free_port(), tmp_path / "out"
    start = time.monotonic()
    code, _, err = run_cli(grid_args(out, tiny_weights, STRATEGIES, "--executor", "ray", "--address",
                                     f"127.0.0.1:{port}"), capsys)
    assert code == 2 and time.monotonic() - start < 30
    line = error_line(err)
    assert f"--address 127.0.0.1:{port}: nothing answers there" in line and "ray start --head" in line
    assert not out.exists()


@pytest.mark.parametrize("extra, expected", [
    (["--executor", "ray", "--cpus-per-cell", "0"], "--cpus-per-cell must be >= 1"),
    (["--executor", "ray", "--cpus-per-cell", "-2"], "--cpus-per-cell must be >= 1"),
    (["--executor", "ray", "--gpus-per-cell", "-1"], "--gpus-per-cell must be >= 0"),
    (["--address", "10.0.0.1:6379"], "--address only apply to --executor ray"),
    (["--cpus-per-cell", "2", "--gpus-per-cell", "1"], "--cpus-per-cell, --gpus-per-cell only apply to --executor ray"),
    (["--executor", "local", "--gpus-per-cell", "1"], "--gpus-per-cell only apply to --executor ray"),
    (["--executor", "ray", "--jobs", "2"], "--jobs 2 is for --executor local"),
    (["--executor", "ray", "--device", "cuda"], "--device cuda with --executor ray needs --gpus-per-cell > 0"),
    (["--executor", "ray", "--address", "headnode"], "--address 'headnode': give HOST:PORT"),
])
def test_options_that_do_not_fit_are_one_line(tmp_path, tiny_weights, capsys, extra, expected):
    if "--address" in extra and "--executor" in extra and importlib.util.find_spec("ray") is None:
        pytest.skip("the address is checked after Ray imports")
    out = tmp_path / "out"
    code, _, err = run_cli(grid_args(out, tiny_weights, STRATEGIES, *extra), capsys)
    assert code == 2
    assert expected in error_line(err)
    assert not out.exists()

