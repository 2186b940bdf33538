"""Trainer: learning rates that really apply, exact resume, repeatable runs, history lines."""
import json
import math

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.core.conftest import build
from transferlab.runs import RunConfig, finetune
from transferlab.data import DataOptions
from transferlab.training.checkpoint import load_checkpoint
from transferlab.training.config import TrainConfig
from transferlab.training.optim import schedule_factor
from transferlab.training.trainer import LAST, Callback, Trainer


class RecordLRs(Callback):
    """Reads the optimiser's group learning rates after every step (via a hook on optimizer.step)."""

    def __init__(self):
        self.seen = []

    def on_fit_start(self, trainer):
        trainer.optimizer.register_step_post_hook(
            lambda opt, *_: self.seen.append({g["name"]: g["lr"] for g in opt.param_groups}))


def test_discriminative_learning_rates_apply_at_every_step(tmp_path):
    config, data, net, strategy = build(TINY_IMAGE_MODEL, "digits", "discriminative:decay=0.5", epochs=2,
                                        max_train=100, lr=0.01)
    recorder = RecordLRs()
    Trainer(net, strategy, data, config.train, tmp_path, callbacks=[recorder]).fit()
    names = [g.name for g in net.depth_groups]
    last = len(names) - 1
    steps = len(recorder.seen)
    assert steps == 2 * math.ceil(100 / 32)
    for step, lrs in enumerate(recorder.seen):
        factor = schedule_factor(step, steps, config.train)
        for index, name in enumerate(names):
            expected = 0.01 * 0.5 ** (last - index) * factor
            assert lrs[name] == pytest.approx(expected, rel=1e-9), (step, name)
    assert recorder.seen[-1]["head"] < recorder.seen[1]["head"]  # the cosine schedule decays


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(warmup=0.1)
    assert schedule_factor(0, 100, cfg) == pytest.approx(0.1)
    assert schedule_factor(9, 100, cfg) == pytest.approx(1.0)
    assert schedule_factor(10, 100, cfg) == pytest.approx(1.0)
    assert schedule_factor(55, 100, cfg) == pytest.approx(0.5)
    assert schedule_factor(55, 100, TrainConfig(warmup=0.1, schedule="linear")) == pytest.approx(0.5)
    assert schedule_factor(55, 100, TrainConfig(warmup=0.1, schedule="constant")) == 1.0


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt  # as if the process died right after this epoch's checkpoint


def _config(strategy, epochs=3):
    return RunConfig(model=TINY_IMAGE_MODEL, data="digits", strategy=strategy,
                     train=TrainConfig(epochs=epochs, batch_size=32),
                     data_options=DataOptions(max_train=120, image_size=32))


@pytest.mark.parametrize("strategy", ["gradual_unfreeze:every=1", "lp_ft:lp_epochs=1"])
def test_resume_in_the_middle_of_unfreezing_is_exact(tmp_path, strategy):
    whole = finetune(_config(strategy), tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(strategy), tmp_path / "cut", callbacks=[StopAfter(2)])
    resumed = finetune(_config(strategy), tmp_path / "cut", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "checkpoint" / LAST)
    b = load_checkpoint(tmp_path / "cut" / "checkpoint" / LAST)
    for key in a[0]:
        assert torch.equal(a[0][key], b[0][key]), key
    assert a[1]["param_groups"] == b[1]["param_groups"]  # same parameter groups and learning rates
    for idx, entry in a[1]["state"].items():
        for k, v in entry.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b[1]["state"][idx][k]))
    for key in ("val", "best_epoch", "final_train_accuracy", "trainable_params"):
        assert whole[key] == resumed[key]
    history = [json.loads(line) for line in (tmp_path / "cut" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_same_command_twice_gives_same_metrics(tmp_path):
    first = finetune(_config("discriminative", epochs=2), tmp_path / "a")
    second = finetune(_config("discriminative", epochs=2), tmp_path / "b")
    for key in ("val", "best_epoch", "final_train_accuracy"):
        assert first[key] == second[key]


def test_history_has_one_line_per_epoch_with_group_lrs(tmp_path):
    finetune(_config("freeze:k=1", epochs=2), tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for record in lines:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                "samples_per_second"} <= set(record)
        assert "head" in record["lr"] and record["samples_per_second"] > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("model", "strategy", "trainable_params", "total_params", "train_seconds", "epochs_run",
                "best_epoch", "skipped_inputs"):
        assert key in metrics
    assert metrics["epochs_run"] == 2 and 0 <= metrics["val"]["accuracy"] <= 1
