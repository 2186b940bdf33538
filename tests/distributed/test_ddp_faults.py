"""Faults of a distributed run, done for real: one of two training processes is killed with SIGKILL in the middle
of an epoch. The job ends with a clear message, the last checkpoint is whole, and --resume on the same number of
processes ends with the uninterrupted run's weights and numbers."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import error_line, run_cli
from tests.distributed.conftest import transferlab
from transferlab.safe_io import load_tensors
from transferlab.training.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _equivalence import write_weights  # noqa: E402

STEPS_PER_EPOCH = 8  # 117 examples in global batches of 2 x 8


def finetune_args(out: Path, weights: str, *extra: str) -> list[str]:
    return ["finetune", "--model", "test_efficientnet", "--weights", weights, "--data", "digits",
            "--image-size", "32", "--max-train", "117", "--max-val", "61", "--epochs", "3", "--batch-size", "8",
            "--lr", "3e-3", "--bn-stats", "frozen", "--device", "cpu", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return write_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, weights) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "straight"
    done = transferlab(finetune_args(out, weights, "--nproc", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory, weights) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "killed"
    step = STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2  # the middle of epoch 2
    done = transferlab(finetune_args(out, weights, "--nproc", "2"), TRANSFERLAB_FAULT=f"kill_at_step:{step}",
                       TRANSFERLAB_FAULT_RANK="1")
    return out, done


def test_killed_rank_ends_the_job_with_a_clear_message(killed):
    out, done = killed
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("transferlab: error:")]
    assert any("rank 1" in ln and "SIGKILL" in ln and "continue with --resume" in ln for ln in lines), lines
    assert not (out / "metrics.json").exists()


def test_last_checkpoint_is_intact(killed):
    out, _ = killed
    model, _, state, _, rng = load_checkpoint(out / "checkpoint" / "last.safetensors")
    assert state["epoch"] == 1 and state["world_size"] == 2  # epoch 1 finished; epoch 2 was cut
    assert "rank1.torch" in rng  # the other process's generator, for an exact resume
    assert len(model) > 0


def test_resume_gives_the_uninterrupted_result(killed, uninterrupted, tmp_path, weights):
    out, _ = killed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)  # resumed below on one process
    done = transferlab(finetune_args(out, weights, "--nproc", "2", "--resume"))
    assert done.returncode == 0, done.stderr[-3000:]
    resumed, straight = (json.loads((d / "metrics.json").read_text()) for d in (out, uninterrupted))
    assert resumed["val"] == straight["val"]
    a, b = (load_tensors(d / "checkpoint" / "best.safetensors") for d in (out, uninterrupted))
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()) < 1e-6
    histories = [[json.loads(ln) for ln in (d / "history.jsonl").read_text().splitlines()] for d in (out, uninterrupted)]
    assert [r["train_loss"] for r in histories[0]] == pytest.approx([r["train_loss"] for r in histories[1]], abs=1e-7)

    # on another number of processes the run goes on, and says what that changes
    one = transferlab(finetune_args(copy, weights, "--resume"))
    assert one.returncode == 0, one.stderr[-3000:]
    assert "was trained on 2 process(es), now 1" in one.stderr
    assert json.loads((copy / "metrics.json").read_text())["world_size"] == 1


def test_bad_nproc_is_one_line(tmp_path, capsys, weights):
    code, _, err = run_cli(finetune_args(tmp_path / "r", weights, "--nproc", "0"), capsys)
    assert code == 2 and "--nproc must be >= 1" in error_line(err)
    assert not (tmp_path / "r").exists()


def test_sync_bn_on_cpu_is_one_line(tmp_path, capsys, weights):
    code, _, err = run_cli(finetune_args(tmp_path / "r", weights, "--sync-bn", "--epochs", "1"), capsys)
    assert code == 2 and "SyncBatchNorm runs on CUDA devices only" in error_line(err)
