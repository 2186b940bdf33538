"""dann on 2 CPU processes (gloo) makes the updates of one process with the global batch: each rank takes its rows
of every target batch and the discriminator's gradients (outside DDP) are averaged over the ranks. cdan and mcc
run there too; their losses are batch statistics (per-domain entropy normalisation, the class confusion of a
batch), computed per rank, so they equal the one-process run only approximately and are checked to run."""
import sys
from pathlib import Path

import torch

from transferlab.runs import finetune
from transferlab.training.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _domain_job import config  # noqa: E402
from _equivalence import write_weights  # noqa: E402
from test_ddp_equivalence import torchrun  # noqa: E402

HERE = Path(__file__).resolve().parent


def test_dann_on_two_processes_equals_one(tmp_path):
    weights = write_weights(tmp_path / "w.safetensors")
    job = torchrun(HERE / "_domain_job.py", str(tmp_path / "ddp"), weights, "dann", "cdan", "mcc")
    assert job.returncode == 0, job.stderr[-3000:]
    finetune(config("dann", weights, per_process=False), tmp_path / "one")
    one = load_checkpoint(tmp_path / "one" / "checkpoint" / "last.safetensors")
    two = load_checkpoint(tmp_path / "ddp" / "0" / "checkpoint" / "last.safetensors")
    for a, b in ((one[0], two[0]), (one[3], two[3])):  # model weights, discriminator
        assert a.keys() == b.keys()
        worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        assert worst < 5e-5, worst  # float rounding of sums in another order, through 12 AdamW steps
    for index in (1, 2):
        assert (tmp_path / "ddp" / str(index) / "metrics.json").is_file()
