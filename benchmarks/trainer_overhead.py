"""Does the trainer cost anything a hand-written loop would not?

Trains the same model, data, batch size and strategy with transferlab's Trainer and with a plain PyTorch loop,
alternating in one process, and reports training samples per second and their ratio. Both iterate the same
DataLoader (same decoding and collation); the Trainer's figure is its own `samples_per_second` from history
(training loop only, as for the plain loop). Cases: fine-tuning (`full`, batch --batch-size) of the two bundled
models, and pre-training (`transferlab pretrain`'s strategy, batch size and normalisation) of resnet10_cifar from
random weights on 5,000 images of CIFAR-10's five source classes. `efficientnet_lite0_digits` (the bundled digits at
64 px, no data to fetch) is the case benchmarks/gpu_check.py runs with `--device cuda`.

    .venv/bin/python benchmarks/trainer_overhead.py [--repeats 2] [--cases resnet10_cifar_pretrain] [--device cuda]
        [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from _data import dataset
from transferlab.data import DataOptions, is_builtin_spec
from transferlab.pretraining import PRETRAIN_DEFAULTS, PRETRAIN_STRATEGY, source_overrides
from transferlab.runs import RunCaches, RunConfig, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import to_device
from transferlab.training.trainer import Trainer

CASES = {  # data: a data set under $TRANSFERLAB_DATA (docs/data.md), or a bundled one ('digits')
    "efficientnet_lite0": dict(model="efficientnet_lite0", data="hymenoptera",
                               options=DataOptions(max_train=128, image_size=160, max_val=8)),
    "minilm_l6": dict(model="minilm_l6", data="sst2",
                      options=DataOptions(max_train=512, max_length=64, max_val=8)),
    "efficientnet_lite0_digits": dict(model="efficientnet_lite0", data="digits",
                                      options=DataOptions(max_train=1024, image_size=64, max_val=10)),
    "resnet10_cifar_pretrain": dict(model="resnet10_cifar", data="cifar10",
                                    options=DataOptions(classes="airplane,automobile,bird,cat,deer", max_train=5000,
                                                        max_val=8),
                                    strategy=PRETRAIN_STRATEGY, batch_size=PRETRAIN_DEFAULTS["batch_size"],
                                    pretrain=True),
}


def plain_loop(model, data, batch_size: int, seed: int, device: str = "cpu") -> float:
    """The loop a careful user writes by hand: AdamW, cross-entropy, clipping (on `device`, fp32, contiguous)."""
    torch.manual_seed(seed)
    model.to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, collate_fn=data.collate)
    n, start = 0, time.perf_counter()
    for batch in loader:
        batch = to_device(batch, device)
        loss = F.cross_entropy(model(batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        n += batch["labels"].numel()
    if torch.device(device).type == "cuda":  # the queued kernels are part of the loop's time
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def transferlab_loop(config: RunConfig) -> float:
    data, model, strategy = prepare(config)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, strategy, data, config.train, out)
        trainer.fit()
        return trainer.state.history[0]["samples_per_second"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="the Trainer against a plain PyTorch loop, same DataLoader")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cases", default=",".join(c for c in CASES if c != "efficientnet_lite0_digits"),
                        help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: both loops run there")
    parser.add_argument("--json", metavar="FILE", help="also write the rows to FILE as JSON")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    unknown = [name for name in args.cases.split(",") if name not in CASES]
    if unknown:
        raise SystemExit(f"error: unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}), batch size {args.batch_size}")
    print(f"{'model':<24}{'plain samples/s':>14}{'transferlab samples/s':>24}{'ratio':>8}")
    rows = []
    for name in args.cases.split(","):
        case = CASES[name]
        batch_size = case.get("batch_size", args.batch_size)
        data_path = case["data"] if is_builtin_spec(case["data"]) else str(dataset(case["data"]))
        config = RunConfig(model=case["model"], data=data_path, strategy=case.get("strategy", "full"),
                           train=TrainConfig(epochs=1, batch_size=batch_size, warmup=0.0, device=args.device),
                           data_options=case["options"])
        if case.get("pretrain"):  # the input statistics pretrain measures, so both loops see the same inputs
            config.cfg_overrides = source_overrides(config, RunCaches())
        plain, ours = [], []
        for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
            data, model, _ = prepare(config)
            plain.append(plain_loop(model, data, batch_size, seed=0, device=args.device))
            ours.append(transferlab_loop(config))
        p, o = statistics.median(plain), statistics.median(ours)
        print(f"{name:<24}{p:>14.2f}{o:>24.2f}{o / p:>8.3f}   (batch {batch_size}, {args.repeats} repeats, "
              f"medians)", flush=True)
        rows.append({"case": name, "device": args.device, "batch_size": batch_size, "repeats": args.repeats,
                     "plain_samples_per_second": p, "transferlab_samples_per_second": o, "ratio": o / p,
                     "plain_all": plain, "transferlab_all": ours})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"torch": torch.__version__, "device": args.device, "device_name": where, "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
