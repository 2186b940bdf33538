"""EWC and LwF keep a real source task better than plain fine-tuning: the effect, not only the mechanics.

The sequence of the forgetting lab (src/transferlab/labs/forgetting.py) at one seed and two epochs a task:
`test_efficientnet` (random init) trained on digits 0-4 at 32 px is the source model; its backbone and head
become a --weights file (the head the source head); it is fine-tuned on digits 5-9 with one learning rate for
every layer (`full:backbone_lr=1`, the usual continual-learning setting; `full`'s default 0.1x backbone rate
forgets only a few points, too little to separate the methods), alone and with `ewc` (Fisher from the true 0-4
labels) or `lwf` added; `forgetting_for_run` scores the source head on the held-out 0-4 validation split (180
images) before and after.

Measured while writing this test (2 busy CPU cores, seeds 0-4, the settings below), source accuracy after
fine-tuning on 5-9 (before: 0.978, 0.933, 0.961, 0.956, 0.983):

    full  0.444  0.594  0.472  0.344  0.672
    ewc   0.972  0.933  0.933  0.939  0.967     ewc - full  +0.295 to +0.595
    lwf   0.900  0.839  0.850  0.856  0.889     lwf - full  +0.217 to +0.512

and target (5-9) validation accuracy 0.97-0.98 for full and lwf, 0.90-0.93 for ewc. The test runs seed 0 and
asks for 10 points (under half the smallest gap seen) and for the target task still learned; about 17 s.
"""
from __future__ import annotations

import json

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.data import DataOptions
from transferlab.runs import RunConfig, finetune
from transferlab.training.config import TrainConfig

SOURCE, TARGET = "digits:0-4", "digits:5-9"
FULL = "full:backbone_lr=1"
STRATEGIES = {"full": FULL, "ewc": f"{FULL}+ewc:lam=3000", "lwf": f"{FULL}+lwf"}  # ewc's lam as the lab's


def _config(data: str, strategy: str, weights: str | None = None) -> RunConfig:
    return RunConfig(model=TINY_IMAGE_MODEL, data=data, strategy=strategy, weights=weights,
                     train=TrainConfig(epochs=2, lr=3e-3, seed=0, device="cpu"),
                     data_options=DataOptions(image_size=32, seed=0),
                     strategy_options={"source_data": SOURCE} if weights else {})


def test_ewc_and_lwf_keep_the_source_task_better_than_full(tmp_path):
    from transferlab.diagnostics.forgetting import forgetting_for_run
    from transferlab.diagnostics.source import export_source_weights

    finetune(_config(SOURCE, "full"), tmp_path / "source")
    weights = tmp_path / "source.safetensors"
    export_source_weights(tmp_path / "source", weights)
    cache: dict = {}  # the source model's predictions and the 0-4 data, read once
    after, target = {}, {}
    for label, spec in STRATEGIES.items():
        run = tmp_path / label
        finetune(_config(TARGET, spec, str(weights)), run)
        result = forgetting_for_run(run, source_data=SOURCE, cache=cache)
        after[label] = result.accuracy_after
        target[label] = json.loads((run / "metrics.json").read_text())["val"]["accuracy"]
    before = result.accuracy_before
    numbers = f"source accuracy before {before:.3f}, after {after}; target val accuracy {target}"
    assert before >= 0.9, numbers  # the source model learned 0-4
    assert before - after["full"] >= 0.15, numbers  # full fine-tuning forgets (0.53 at seed 0)
    assert after["ewc"] - after["full"] >= 0.10, numbers
    assert after["lwf"] - after["full"] >= 0.10, numbers
    assert min(target.values()) >= 0.8, numbers  # kept by learning 5-9, not by not learning it
