"""`compare --executor ray` on a cluster: every path a cell reads or writes goes to the Ray tasks as an absolute path
(a node would resolve a relative one against its own working folder), the user is told once which paths every node
must see, and with --address a relative input path that does not exist here is refused in one line before anything
connects. No cluster is started: a stand-in for Ray records what the tasks would get (docs/distributed.md)."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.compare.conftest import grid_args
from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from transferlab.compare import ray_executor
from transferlab.compare.grid import CellResult, grid_spec
from transferlab.errors import ConfigError


class _RecordingRay:
    """Enough of ray's API for run_on_ray: records the spec and cells the tasks get; each task 'finishes'."""

    class exceptions:
        RayError = RayTaskError = type("RayError", (Exception,), {})

    def __init__(self):
        self.tasks, self.init_kwargs, self.initialized = [], None, False

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.initialized, self.init_kwargs = True, kwargs

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def remote(self, **options):
        fake = self

        class Task:
            def remote(self, spec, cell, out, *args):
                fake.tasks.append((spec, cell, out))
                return len(fake.tasks) - 1

        return lambda fn: Task()

    def put(self, value):
        return value

    def wait(self, refs, num_returns, timeout):
        return refs[:1], refs[1:]

    def get(self, ref):
        return CellResult(dataclasses.replace(self.tasks[ref][1]), "finished", metrics={})

    def shutdown(self):
        self.initialized = False


@pytest.fixture
def in_tmp(tmp_path, tiny_weights, monkeypatch):
    """The current folder is tmp_path, holding weights/tiny.safetensors and an (empty) cache folder's parent."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    shutil.copy(tiny_weights, tmp_path / "weights" / "tiny.safetensors")
    return tmp_path


@pytest.fixture
def fake_ray(monkeypatch):
    fake = _RecordingRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    connected = []
    monkeypatch.setattr(ray_executor, "check_address", lambda address: connected.append(address))
    fake.connected = connected
    return fake


def _spec(weights: str, cache_dir: str = "cache"):
    return grid_spec(model=TINY_IMAGE_MODEL, data="digits:0-2", strategies="linear_probe,full", seeds=1,
                     scratch=True, weights=weights, image_size=32, cache_dir=cache_dir)


def _is_under(path: str, folder: Path) -> bool:
    return Path(path).is_absolute() and Path(path).resolve().is_relative_to(folder.resolve())


def test_the_tasks_get_absolute_paths_and_the_user_is_told_once(in_tmp, fake_ray, caplog):
    from transferlab.compare.executor import run_grid

    caplog.set_level(logging.INFO, logger="transferlab")
    results = run_grid(_spec("weights/tiny.safetensors"), "cmp", executor="ray", address="10.0.0.1:6379")
    assert [r.status for r in results] == ["finished"] * 6  # linear_probe, full, four scratch recipes
    assert fake_ray.connected == ["10.0.0.1:6379", "10.0.0.1:6379"]  # checked before the grid, then by run_on_ray
    assert fake_ray.init_kwargs["address"] == "10.0.0.1:6379"
    weights, cache, out = in_tmp / "weights" / "tiny.safetensors", in_tmp / "cache", in_tmp / "cmp"
    for spec, cell, task_out in fake_ray.tasks:
        assert Path(spec.base.weights) == weights.resolve()
        assert spec.base.train.cache_dir == str(cache.absolute())  # was "cache": a node would write its own
        assert task_out == out.absolute() and cell.run_dir.is_absolute() and _is_under(str(cell.run_dir), out)
        if cell.config is not None:  # the scratch cells' configs are made in the task, from spec.base
            assert Path(cell.config.weights) == weights.resolve()
            assert cell.config.train.cache_dir == str(cache.absolute())
    told = [r.getMessage() for r in caplog.records if "must exist at that same path on every node" in r.getMessage()]
    assert len(told) == 1, told
    assert f"--weights {weights.resolve()}" in told[0] and f"--out {out.absolute()}" in told[0]
    assert f"--cache-dir {cache.absolute()}" in told[0] and "--out and --cache-dir on a file system" in told[0]


def test_a_local_instance_gets_absolute_paths_too_without_the_warning(in_tmp, fake_ray, caplog):
    from transferlab.compare.executor import run_grid

    caplog.set_level(logging.INFO, logger="transferlab")
    run_grid(_spec("weights/tiny.safetensors"), "cmp", executor="ray")
    assert fake_ray.connected == [] and "address" not in fake_ray.init_kwargs
    assert {spec.base.train.cache_dir for spec, _, _ in fake_ray.tasks} == {str(in_tmp.absolute() / "cache")}
    assert not [r for r in caplog.records if "every node" in r.getMessage()]


def test_a_relative_path_not_found_here_is_refused_before_connecting(in_tmp, fake_ray):
    from transferlab.compare.executor import run_grid

    with pytest.raises(ConfigError) as info:
        run_grid(_spec("elsewhere/tiny.safetensors"), "cmp", executor="ray", address="10.0.0.1:6379")
    assert str(info.value).startswith("--weights elsewhere/tiny.safetensors: no such file or folder here, and on "
                                      "the Ray cluster at 10.0.0.1:6379 a relative path")
    assert "give the absolute path" in str(info.value) and "\n" not in str(info.value)
    assert fake_ray.connected == [] and fake_ray.init_kwargs is None and not (in_tmp / "cmp").exists()


def test_an_absolute_path_not_found_here_is_a_warning_not_a_refusal(in_tmp, fake_ray, caplog):
    """A node may see a path this machine does not (a mount on the workers only): warned, and the grid goes on."""
    from transferlab.compare.executor import run_grid

    caplog.set_level(logging.INFO, logger="transferlab")
    missing = "/nodes-only/tiny.safetensors"
    assert not Path(missing).exists()
    run_grid(_spec(missing, cache_dir=""), "cmp", executor="ray", address="10.0.0.1:6379")
    assert {spec.base.weights for spec, _, _ in fake_ray.tasks} == {missing}
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"--weights {missing} is not found")]
    assert len(warned) == 1 and "the report, written here, reads it too" in warned[0]


def test_the_command_line_fails_in_one_line_on_the_path_before_connecting(in_tmp, capsys, monkeypatch):
    """`compare --executor ray --address 127.0.0.1:1` (nobody listens there) with a relative --weights that is not
    here: the path's line, not the address's, and nothing written."""
    monkeypatch.setattr(ray_executor, "check_address", lambda address: pytest.fail("connected before the paths"))
    args = grid_args(Path("cmp"), Path("elsewhere/tiny.safetensors"), "linear_probe", "--no-scratch",
                     "--executor", "ray", "--address", "127.0.0.1:1")
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "--weights elsewhere/tiny.safetensors: no such file or folder here" in error_line(err)
    assert not (in_tmp / "cmp").exists()
