"""Schedules that restart at a strategy's phase boundary: lp_ft fine-tunes with a warm-up and decay of its own."""
import math

import pytest

from tests.conftest import TINY_IMAGE_MODEL
from tests.core.conftest import build
from transferlab.strategies import parse_strategy
from transferlab.training.config import TrainConfig
from transferlab.training.optim import schedule_factor
from transferlab.training.trainer import Callback, Trainer

LR, FT_LR, WARMUP = 0.01, 0.1, 0.3
MAX_TRAIN = 120  # 4 batches of 32 per epoch (the last one of 24)


class RecordLRs(Callback):
    """Each optimiser step's group learning rates; raises KeyboardInterrupt after `stop_after` steps, as if the
    process died there (the step's own checkpoint is not written, the one before it is)."""

    def __init__(self, stop_after: int | None = None):
        self.seen, self.stop_after = [], stop_after

    def on_fit_start(self, trainer):
        trainer.optimizer.register_step_post_hook(self._record)

    def _record(self, opt, *_):
        self.seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            raise KeyboardInterrupt


def _reference_factor(step: int, starts: list[int], total: int) -> float:
    """The restarted schedule, written out: each phase [start, end) warms up linearly over int(WARMUP * its
    length) steps, then decays by a half cosine to its end."""
    start = max(s for s in starts if s <= step)
    end = min([s for s in starts if s > step] + [total])
    length, i = end - start, step - start
    warm = int(WARMUP * length)
    if i < warm:
        return (i + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (i - warm) / (length - warm)))


def _fit(tmp_path, callbacks, resume=False):
    config, data, net, strategy = build(TINY_IMAGE_MODEL, "digits", f"lp_ft:lp_epochs=1,ft_lr={FT_LR}", epochs=3,
                                        max_train=MAX_TRAIN, lr=LR, warmup=WARMUP, checkpoint_every_steps=1)
    trainer = Trainer(net, strategy, data, config.train, tmp_path, callbacks=callbacks)
    trainer.fit(resume=resume)
    return net


def test_lp_ft_fine_tuning_phase_warms_up_and_decays_on_its_own(tmp_path):
    recorder = RecordLRs()
    net = _fit(tmp_path / "whole", [recorder])
    per_epoch = math.ceil(MAX_TRAIN / 32)
    total = 3 * per_epoch
    assert len(recorder.seen) == total
    backbone = net.depth_groups[0].name
    lrs = [step[backbone] for step in recorder.seen]
    # the backbone's first fine-tuning steps are the warm-up's: small and rising, not the middle of one cosine
    boundary = per_epoch
    assert lrs[boundary] == pytest.approx(LR * FT_LR / int(WARMUP * 2 * per_epoch))
    assert lrs[boundary] < lrs[boundary + 1] == pytest.approx(LR * FT_LR)
    for step, lr in enumerate(lrs):
        scale = 1.0 if step < boundary else FT_LR
        assert lr == pytest.approx(LR * scale * _reference_factor(step, [0, boundary], total), rel=1e-12), step
    assert lrs[-1] < 0.1 * LR * FT_LR  # decayed by the run's end

    # resumed inside the fine-tuning phase (after its 2nd step), the same sequence goes on
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", [RecordLRs(stop_after=boundary + 3)])
    resumed = RecordLRs()
    _fit(tmp_path / "cut", [resumed], resume=True)
    assert [s[backbone] for s in resumed.seen] == lrs[boundary + 2:]
    assert resumed.seen == recorder.seen[boundary + 2:]


def test_schedule_restarts_where_a_strategy_says():
    cfg = TrainConfig(warmup=0.1)
    assert parse_strategy("full").schedule_restarts(5) == []
    assert parse_strategy("lp_ft:lp_epochs=2").schedule_restarts(5) == [2]
    assert parse_strategy("lp_ft:lp_epochs=2+l2sp").schedule_restarts(5) == [2]
    # phase [0, 20) then [20, 120): each warms up over 10% of its own steps, then decays to its end
    assert schedule_factor(0, 120, cfg, restarts=[20]) == pytest.approx(0.5)
    assert schedule_factor(1, 120, cfg, restarts=[20]) == pytest.approx(1.0)
    assert schedule_factor(20, 120, cfg, restarts=[20]) == pytest.approx(0.1)
    assert schedule_factor(29, 120, cfg, restarts=[20]) == pytest.approx(1.0)
    assert schedule_factor(30 + 45, 120, cfg, restarts=[20]) == pytest.approx(0.5)
    # no restart: the one global schedule as before
    assert schedule_factor(55, 100, cfg, restarts=[]) == schedule_factor(55, 100, cfg) == pytest.approx(0.5)
