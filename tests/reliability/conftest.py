"""Shared helpers for the reliability tests: a tiny real run, and ways to compare two runs bit for bit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.conftest import error_line, run_cli  # noqa: F401  (re-exported for this folder's tests)
from transferlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
# A tiny timm architecture (random init) on the bundled digits at 32 px: 7 steps per epoch. --augment makes
# every step draw from torch's global RNG (random crops), so a resume that lost the RNG state would show.
RUN_ARGS = ["--model", "test_efficientnet", "--data", "digits", "--image-size", "32", "--max-train", "200",
            "--augment", "--epochs", "3"]
STEPS_PER_EPOCH = 7  # ceil(200 / 32)
# Wall-clock fields: the only ones allowed to differ between an interrupted run and an uninterrupted one.
TIMING_KEYS = {"train_seconds", "samples_per_second", "peak_memory_mb", "seconds", "cache_seconds"}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread, as in the subprocesses: on a shared 2-core machine, 2+ spinning OpenMP threads
    per process make a 3-epoch tiny run take a minute instead of seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def default_sigint() -> None:
    """Popen's preexec_fn for a child that a test interrupts with SIGINT: a signal ignored by the parent stays
    ignored across exec (a test runner or an earlier test may leave SIGINT ignored), and Python installs its
    KeyboardInterrupt handler only where SIGINT is at its default, so the child would never see the Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def subprocess_env(fault: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERLAB_FAULT"}
    # One thread in every subprocess, so an interrupted run and its baseline use the same CPU kernels.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    if fault:
        env["TRANSFERLAB_FAULT"] = fault
    return env


def run_subprocess(args: list[str], fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m transferlab ARGS` in a fresh process (the only way to test a real SIGKILL)."""
    return subprocess.run([sys.executable, "-m", "transferlab", *args], env=subprocess_env(fault), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)




def strip_keys(obj, keys):
    """A JSON value without the dict entries named in `keys`, at every depth."""
    if isinstance(obj, dict):
        return {k: strip_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [strip_keys(v, keys) for v in obj]
    return obj


def strip_timing(obj):
    return strip_keys(obj, TIMING_KEYS)


def tensors_and_meta(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata() or {}


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, _ = tensors_and_meta(a)
    tb, _ = tensors_and_meta(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape, k
        assert torch.equal(_bits(ta[k]), _bits(tb[k])), f"{a.name}: {k} differs"


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().flatten().view(torch.uint8)  # bitwise: NaN == NaN, -0.0 != 0.0


def assert_same_run(run: Path, baseline: Path) -> None:
    """Weights, optimiser, RNG, history and metrics equal bit for bit; only wall-clock fields may differ."""
    assert (run / "checkpoint" / "best.safetensors").read_bytes() == \
        (baseline / "checkpoint" / "best.safetensors").read_bytes()
    assert_same_tensors(run / "checkpoint" / "last.safetensors", baseline / "checkpoint" / "last.safetensors")
    _, meta_run = tensors_and_meta(run / "checkpoint" / "last.safetensors")
    _, meta_base = tensors_and_meta(baseline / "checkpoint" / "last.safetensors")
    assert json.loads(meta_run["optimizer"]) == json.loads(meta_base["optimizer"])
    assert strip_timing(json.loads(meta_run["trainer_state"])) == strip_timing(json.loads(meta_base["trainer_state"]))
    for name in ("metrics.json",):
        got = strip_timing(json.loads((run / name).read_text()))
        want = strip_timing(json.loads((baseline / name).read_text()))
        assert got == want, name
    history = [strip_timing(json.loads(ln)) for ln in (run / "history.jsonl").read_text().splitlines()]
    want = [strip_timing(json.loads(ln)) for ln in (baseline / "history.jsonl").read_text().splitlines()]
    assert history == want


def stale_temps(run: Path) -> list[Path]:
    return sorted(run.glob(".*.transferlab-tmp")) + sorted(run.glob("checkpoint/.*.transferlab-tmp"))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished, uninterrupted run (RUN_ARGS) made in this process: the baseline every fault test compares
    with (one torch thread here and in the subprocesses, so both give the same bits). Tests that change it
    work on a copy (`run_copy`)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    args = ["finetune", *RUN_ARGS, "--out", str(out)]
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 0 and (out / "metrics.json").is_file()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inject(monkeypatch):
    """inject("kill_at_step:3"): a TRANSFERLAB_FAULT plan for this process, counting from zero;
    inject(None) clears it. Undone after the test."""
    from transferlab import faults

    def _inject(spec: str | None) -> None:
        faults.reset()
        if spec is None:
            monkeypatch.delenv(faults.ENV, raising=False)
        else:
            monkeypatch.setenv(faults.ENV, spec)

    yield _inject
    faults.reset()
