"""DistributedDataParallel on 2 CPU processes (gloo) makes the updates of one process with the global batch.

One torchrun job runs every strategy below with per-process batch B/2; the same runs in this process with batch B
must end with the same weights (to 1e-5), the same per-epoch losses and the same validation numbers. The
strategies cover the traps: `gradual_unfreeze` and `lp_ft` change the trainable set between epochs (DDP is
rebuilt), `lora` is a PEFT model (find_unused_parameters), `ewc` computes its Fisher once on rank 0."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transferlab.runs import finetune
from transferlab.safe_io import load_tensors
from transferlab.training.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _equivalence import MAX_VAL, run_config, write_weights  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = [
    {"strategy": "full"},
    {"strategy": "freeze:k=2"},
    {"strategy": "gradual_unfreeze:every=1", "epochs": 3},  # phase changes after epochs 1 and 2
    {"strategy": "lp_ft:lp_epochs=1", "epochs": 2},
    {"strategy": "lora:r=4"},
    {"strategy": "ewc"},
]
BF16 = {"strategy": "full", "precision": "bf16"}


def torchrun(script: Path, *args: str, nproc: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(nproc), str(script), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[dict]:
    weights = write_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")
    return [{**run, "weights": weights} for run in [*RUNS, BF16]]


@pytest.fixture(scope="module")
def job(tmp_path_factory, runs) -> Path:
    out = tmp_path_factory.mktemp("ddp_job")
    done = torchrun(HERE / "_ddp_job.py", str(out), *(json.dumps(r) for r in runs))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory, runs) -> Path:
    out = tmp_path_factory.mktemp("single")
    for index, run in enumerate(runs):
        torch.manual_seed(1234)  # whatever the process drew before must not matter
        finetune(run_config(**run), out / str(index))
    return out


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint" / "last.safetensors")[0]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("index", range(len(RUNS)), ids=[r["strategy"] for r in RUNS])
def test_same_updates_as_one_process(job, single, index):
    ddp, one = job / str(index), single / str(index)
    assert max_difference(last_weights(ddp), last_weights(one)) < 1e-5
    assert max_difference(load_tensors(ddp / "checkpoint" / "best.safetensors"),
                          load_tensors(one / "checkpoint" / "best.safetensors")) < 1e-5
    for a, b in zip(history(ddp), history(one), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["trainable_params"] == b["trainable_params"]
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 16
    assert metrics["val"]["n"] == MAX_VAL  # every validation example once: no padding, none twice


def test_trainable_set_changes_rebuild_the_wrapper(job):
    """gradual_unfreeze's phases train more tensors each epoch; the wrapper is rebuilt for each set."""
    trainable = [r["trainable_params"] for r in history(job / "2")]
    assert trainable[0] < trainable[1] < trainable[2]
    log = (job / "rank0.log").read_text()
    assert log.count("DistributedDataParallel rebuilt") >= 3  # 2 gradual_unfreeze phases + lp_ft's change


def test_ewc_fisher_computed_by_rank_0_alone(job):
    assert "ewc: Fisher diagonal" in (job / "rank0.log").read_text()
    assert "ewc: Fisher diagonal" not in (job / "rank1.log").read_text()


def test_bf16_under_ddp(job, single):
    """bf16 autocast on CPU under DDP: the run trains, and its weights stay within bf16 rounding of one process's
    (the two see batches of different shapes, so the rounding differs)."""
    index = str(len(RUNS))
    ddp, one = last_weights(job / index), last_weights(single / index)
    assert json.loads((job / index / "metrics.json").read_text())["precision"] == "bf16"
    assert max_difference(ddp, one) < 5e-2
    assert all(torch.isfinite(v).all() for v in ddp.values() if v.is_floating_point())
