"""Issue 2's SST-2 reference recipe, a plain PyTorch loop, over several seeds: where does 0.84 sit?

The issue reports "a plain 4-epoch AdamW loop: about 0.84 with mean pooling" for all-MiniLM-L6-v2 on 2,000
SST-2 phrases. This script trains exactly that, by hand: one AdamW rate for every parameter (no warm-up, no
schedule, no weight-decay groups, no checkpoint selection), gradient clipping at 1, 4 epochs, and reports
the test accuracy after the last epoch. Model, tokenisation and the seeded 2,000-phrase subsample are
transferlab's (`prepare`), so the numbers compare seed for seed with `transferlab finetune --seed N`.

    .venv/bin/python benchmarks/sst2_reference_loop.py [--seeds 0,1,2,3,4] [--lr 1e-4] [--epochs 4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from _data import dataset
from transferlab.data import DataOptions
from transferlab.runs import RunConfig, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import evaluate


def reference_run(seed: int, lr: float, epochs: int, batch_size: int) -> dict:
    config = RunConfig(model="minilm_l6", data=str(dataset("sst2")), strategy="full", train=TrainConfig(seed=seed),
                       data_options=DataOptions(max_train=2000, max_val=1000, max_length=64, seed=seed))
    data, model, _ = prepare(config)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator,
                        collate_fn=data.collate)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in loader:
            loss = F.cross_entropy(model(batch), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    seconds = time.perf_counter() - start

    def accuracy(dataset) -> float:
        return evaluate(model, DataLoader(dataset, batch_size=64, collate_fn=data.collate), "cpu")["accuracy"]

    return {"seed": seed, "val": accuracy(data.val), "test": accuracy(data.test), "seconds": round(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    tests = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = reference_run(seed, args.lr, args.epochs, args.batch_size)
        tests.append(row["test"])
        print(json.dumps(row), flush=True)
    spread = f" ± {statistics.stdev(tests):.3f} (sample std)" if len(tests) > 1 else ""
    print(f"plain loop, lr {args.lr}, {args.epochs} epochs: test accuracy mean {statistics.mean(tests):.3f}"
          f"{spread} over {len(tests)} seeds")


if __name__ == "__main__":
    main()
