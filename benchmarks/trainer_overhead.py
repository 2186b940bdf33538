"""Does the trainer cost anything a hand-written loop would not?

Trains the same model, data, batch size and strategy with transferlab's Trainer and with a plain PyTorch loop,
alternating in one process, and reports training samples per second and their ratio. Both iterate the same
DataLoader (same decoding and collation); the Trainer's figure is its own `samples_per_second` from history
(training loop only, as for the plain loop). Cases: fine-tuning (`full`, batch --batch-size) of the two bundled
models, and pre-training (`transferlab pretrain`'s strategy, batch size and normalisation) of resnet10_cifar from
random weights on 5,000 images of CIFAR-10's five source classes.

    .venv/bin/python benchmarks/trainer_overhead.py [--repeats 2] [--cases resnet10_cifar_pretrain]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from _data import dataset
from transferlab.data import DataOptions
from transferlab.pretraining import PRETRAIN_DEFAULTS, PRETRAIN_STRATEGY, source_overrides
from transferlab.runs import RunCaches, RunConfig, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import to_device
from transferlab.training.trainer import Trainer

CASES = {  # data: a data set under $TRANSFERLAB_DATA (docs/data.md)
    "efficientnet_lite0": dict(model="efficientnet_lite0", data="hymenoptera",
                               options=DataOptions(max_train=128, image_size=160, max_val=8)),
    "minilm_l6": dict(model="minilm_l6", data="sst2",
                      options=DataOptions(max_train=512, max_length=64, max_val=8)),
    "resnet10_cifar_pretrain": dict(model="resnet10_cifar", data="cifar10",
                                    options=DataOptions(classes="airplane,automobile,bird,cat,deer", max_train=5000,
                                                        max_val=8),
                                    strategy=PRETRAIN_STRATEGY, batch_size=PRETRAIN_DEFAULTS["batch_size"],
                                    pretrain=True),
}


def plain_loop(model, data, batch_size: int, seed: int) -> float:
    """The loop a careful user writes by hand: AdamW, cross-entropy, clipping."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, collate_fn=data.collate)
    n, start = 0, time.perf_counter()
    for batch in loader:
        batch = to_device(batch, "cpu")
        loss = F.cross_entropy(model(batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        n += batch["labels"].numel()
    return n / (time.perf_counter() - start)


def transferlab_loop(config: RunConfig) -> float:
    data, model, strategy = prepare(config)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, strategy, data, config.train, out)
        trainer.fit()
        return trainer.state.history[0]["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch size {args.batch_size}")
    print(f"{'model':<24}{'plain samples/s':>14}{'transferlab samples/s':>24}{'ratio':>8}")
    for name in args.cases.split(","):
        case = CASES[name]
        batch_size = case.get("batch_size", args.batch_size)
        config = RunConfig(model=case["model"], data=str(dataset(case["data"])), strategy=case.get("strategy", "full"),
                           train=TrainConfig(epochs=1, batch_size=batch_size, warmup=0.0),
                           data_options=case["options"])
        if case.get("pretrain"):  # the input statistics pretrain measures, so both loops see the same inputs
            config.cfg_overrides = source_overrides(config, RunCaches())
        plain, ours = [], []
        for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
            data, model, _ = prepare(config)
            plain.append(plain_loop(model, data, batch_size, seed=0))
            ours.append(transferlab_loop(config))
        p, o = statistics.median(plain), statistics.median(ours)
        print(f"{name:<24}{p:>14.2f}{o:>24.2f}{o / p:>8.3f}   (batch {batch_size}, {args.repeats} repeats, "
              f"medians)", flush=True)


if __name__ == "__main__":
    main()
