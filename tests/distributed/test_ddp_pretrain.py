"""`transferlab pretrain --nproc 2`: the same source model as one process with the global batch, and its
checkpoints exported once (by rank 0)."""
import json

import pytest

from tests.distributed.conftest import transferlab

from transferlab.safe_io import load_tensors

ARGS = ["pretrain", "--data", "digits:0-4", "--image-size", "32", "--max-train", "101", "--max-val", "41",
        "--epochs", "2", "--bn-stats", "frozen", "--device", "cpu", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain_ddp")
    two = transferlab([*ARGS, "--batch-size", "8", "--nproc", "2", "--out", str(out / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = transferlab([*ARGS, "--batch-size", "16", "--out", str(out / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    return out / "two", out / "one", two


def test_pretrain_on_two_processes_equals_one(pair):
    two, one, _ = pair
    for epoch in (1, 2):
        a, b = (load_tensors(run / "checkpoints" / f"epoch_{epoch}" / "model.safetensors") for run in (two, one))
        assert a.keys() == b.keys()
        assert max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()) < 1e-5
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["checkpoints"] == ["epoch_1", "epoch_2"] and metrics["world_size"] == 2


def test_rank_0_alone_writes_and_prints(pair):
    _, _, done = pair
    assert done.stdout.count('"checkpoints"') == 1  # one summary, from rank 0
    assert done.stderr.count("kept checkpoint") == 2  # one export per epoch, not one per process
