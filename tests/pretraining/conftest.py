"""Small real pre-training runs shared by the pretraining tests, made once per session in this process:

- `digits_run`: resnet10_cifar on digits 0-4 at 16 px, 5 epochs, a checkpoint every 2 (kept: 2, 4, 5), with the
  model's full state recorded at every epoch end (an extra callback), the reference for the exported weights;
- `image_root` / `image_run`: a tiny image folder (train/val/test, classes a, b, c, 24x24 px) pre-trained on
  --classes a,b only, at 16 px;
- `digits_finetuned`: digits 5-9 fine-tuned from `digits_run@last` with --head-init source, recording what the
  head was initialised to.
Tests that change a run work on a copy (`copy_run`).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.reliability.conftest import error_line, snapshot  # noqa: F401  (plain helpers, re-exported)
from transferlab.cli import main
from transferlab.training.trainer import Callback

IMAGE_SIZE = 16
DIGITS_EPOCHS, DIGITS_EVERY = 5, 2
DIGITS_KEPT = [2, 4, 5]
DIGITS_ARGS = ["pretrain", "--data", "digits:0-4", "--image-size", str(IMAGE_SIZE), "--epochs", str(DIGITS_EPOCHS),
               "--checkpoint-every", str(DIGITS_EVERY), "--max-train", "100", "--batch-size", "32"]
# The image folder: per split, images per class; class c is left out of pre-training (--classes a,b).
IMAGE_COUNTS = {"train": 6, "val": 3, "test": 3}
IMAGE_CLASSES = ("a", "b", "c")
IMAGE_ARGS = ["--classes", "a,b", "--image-size", str(IMAGE_SIZE), "--epochs", "2", "--checkpoint-every", "1",
              "--batch-size", "4"]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread, as in the subprocesses (bit-identical resumes compare in-process runs with them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(args: list[str]) -> int:
    """transferlab.cli.main in this process; its exit code."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of transferlab.cli.main in this process."""
    capsys.readouterr()
    code = cli(args)
    out, err = capsys.readouterr()
    return code, out, err


def load_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text(encoding="utf-8").splitlines()]


class EpochStates(Callback):
    """The model's full state (backbone.*, head.*) at every epoch end, cloned: what the run's weights were then."""

    def __init__(self):
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer, record: dict) -> None:
        self.states[record["epoch"]] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def pretrain_recording(args: list[str]) -> dict[int, dict[str, torch.Tensor]]:
    """`transferlab pretrain ARGS` through the CLI, with EpochStates added to the run's callbacks."""
    from transferlab import pretraining

    recorder = EpochStates()
    original = pretraining.pretrain

    def with_recorder(*a, callbacks=None, **kw):
        return original(*a, callbacks=[*(callbacks or []), recorder], **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretraining, "pretrain", with_recorder)
        assert cli(args) == 0
    return recorder.states


@dataclass
class PretrainRun:
    path: Path
    states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # epoch -> model state at its end


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> PretrainRun:
    out = tmp_path_factory.mktemp("pretrain") / "digits"
    states = pretrain_recording([*DIGITS_ARGS, "--out", out])
    assert sorted(states) == list(range(1, DIGITS_EPOCHS + 1))
    return PretrainRun(out, states)


def class_colour(name: str) -> np.ndarray:
    """Each class its own mean colour (learnable, and class c changes the statistics if it is read)."""
    return {"a": np.array([200, 40, 40]), "b": np.array([40, 200, 40]), "c": np.array([250, 250, 250])}[name]


def write_image_folder(root: Path, classes=IMAGE_CLASSES, counts=None, size: int = 24) -> Path:
    counts = counts or IMAGE_COUNTS
    rng = np.random.default_rng(7)
    for split, n in counts.items():
        for name in classes:
            for i in range(n):
                noise = rng.integers(-40, 41, (size, size, 3))
                pixels = np.clip(class_colour(name) + noise, 0, 255).astype(np.uint8)
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "abc")


@pytest.fixture(scope="session")
def image_run(tmp_path_factory, image_root) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "images"
    assert cli(["pretrain", "--data", image_root, *IMAGE_ARGS, "--out", out]) == 0
    return out


@dataclass
class HeadInit:
    source_weight: torch.Tensor
    source_bias: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    relation: torch.Tensor
    source_classes: tuple


@pytest.fixture(scope="session")
def digits_finetuned(tmp_path_factory, digits_run) -> tuple[Path, HeadInit]:
    """digits 5-9 fine-tuned from digits_run@last with --head-init source (no --image-size: the checkpoint's)."""
    from transferlab.training import head_init

    seen = []
    original = head_init.init_head_from_source

    def recording(model, batches, device):
        relation = original(model, batches, device)
        seen.append(HeadInit(model.source_head.weight.detach().clone(), model.source_head.bias.detach().clone(),
                             model.head.weight.detach().clone(), model.head.bias.detach().clone(),
                             relation.clone(), tuple(model.cfg.source_classes)))
        return relation

    out = tmp_path_factory.mktemp("finetune") / "digits59"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(head_init, "init_head_from_source", recording)
        assert cli(["finetune", "--model", f"{digits_run.path}@last", "--data", "digits:5-9", "--epochs", "1",
                    "--max-train", "60", "--max-val", "30", "--head-init", "source", "--out", out]) == 0
    assert len(seen) == 1
    return out, seen[0]


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest, symlinks=True))
