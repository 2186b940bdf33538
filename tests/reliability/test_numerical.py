"""Non-finite losses: the run stops naming the step and the last good checkpoint, or skips the step."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from tests.reliability.conftest import RUN_ARGS, STEPS_PER_EPOCH, assert_same_run, error_line, run_cli


def test_exploding_lr_stops_with_the_step(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--optimizer", "sgd", "--lr", "1e6", "--warmup", "0",
                            "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert re.search(r"(loss|gradient norm) became (nan|inf|-inf) at step \d+ \(epoch \d+\)", line), line
    assert not (out / "metrics.json").exists()


def test_nan_in_epoch_2_names_the_checkpoint_and_resume_finishes_exactly(tmp_path, capsys, inject,
                                                                          finished_run):
    out = tmp_path / "run"
    step = STEPS_PER_EPOCH + 3
    inject(f"nan_at_step:{step}")
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert f"loss became nan at step {step} (epoch 2)" in line
    assert str(out / "checkpoint" / "last.safetensors") in line and "--resume" in line
    # the named checkpoint is the good one of epoch 1, and the run continues from it to the exact same end
    inject(None)
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert_same_run(out, finished_run)


def test_on_nonfinite_skip_skips_the_step(tmp_path, capsys, inject):
    out = tmp_path / "run"
    inject("nan_at_step:3")
    code, _, err = run_cli(["finetune", *RUN_ARGS[:-1], "1", "--on-nonfinite", "skip", "--out", str(out)],
                           capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] == [3]
    assert metrics["val"]["loss"] == metrics["val"]["loss"]  # finite: the weights were not poisoned


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_gradient_from_a_finite_loss(tmp_path, capsys, monkeypatch, mode):
    """sqrt(|w - w|) is 0 but its gradient is not finite: the loss check alone would train on it."""
    from transferlab.strategies.compose import ComposedStrategy

    original, calls = ComposedStrategy.loss_terms, {"n": 0}

    def loss_terms(self, model, batch, logits):
        terms = dict(original(self, model, batch, logits) or {})
        calls["n"] += 1
        if calls["n"] == 3:
            w = model.head.weight
            terms["spike"] = torch.sqrt((w - w.detach()).abs()).sum()  # value 0, gradient NaN
        return terms

    monkeypatch.setattr(ComposedStrategy, "loss_terms", loss_terms)
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", *RUN_ARGS[:-1], "1", "--on-nonfinite", mode, "--out", str(out)], capsys)
    if mode == "stop":
        assert code == 2
        assert "gradient norm became nan at step 3 (epoch 1)" in error_line(err)
        return
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] == [3] and math.isfinite(metrics["val"]["loss"])
