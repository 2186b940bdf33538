"""How fast is transferlab against what a user would write instead, and against itself without each option?

One process, one case after the other, on the same machine state:

- the machine's peak: a large matrix product in fp32 and in bf16 (GFLOP/s);
- efficientnet_lite0 on hymenoptera and minilm_l6 on SST-2, for linear_probe, freeze with the first half of
  the depth groups frozen, full and lora, each as
    "before"     the trainer as it was before the speed work: --no-cache --memory-format contiguous, fp32, every
                 image decoded again each epoch (a decoded-image store of size 0);
    "defaults"   the trainer as it comes (frozen-prefix cache, channels-last for CNNs, decoded images kept);
    "bf16"       the defaults with --precision bf16;
- what a careful user writes by hand: for the probe, features computed once and scikit-learn's logistic
  regression; for full, a plain PyTorch loop (AdamW, cross-entropy, clipping) on the same DataLoader.

Per row: end-to-end wall time (model and data loading included), training samples per second (the trainer's
own figure: training loop only), and the achieved GFLOP/s of a training step (torch.utils.flop_counter counts
one step of what the row runs, times its steps per second) as a share of the peak of its precision.

    .venv/bin/python benchmarks/speed.py [--cases efficientnet_lite0,minilm_l6] [--epochs 2] [--probe-epochs 5]
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from _data import dataset
from transferlab.data import DataOptions, DecodedImages
from transferlab.runs import RunCaches, RunConfig, finetune, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import evaluate, ordered_loader, to_device
from transferlab.training.precision import native_cpu_bf16
from transferlab.training.prefix_cache import FeatureStore
from transferlab.training.trainer import Trainer

CASES = {  # data: a data set under $TRANSFERLAB_DATA (docs/data.md)
    "efficientnet_lite0": dict(model="efficientnet_lite0", data="hymenoptera", options={}),
    "minilm_l6": dict(model="minilm_l6", data="sst2", options={"max_length": 64, "max_val": 1000}),
}
SETTINGS = {
    "before": dict(cache=False, memory_format="contiguous", precision="fp32"),
    "defaults": {},
    "bf16": dict(precision="bf16"),
}


def peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an n x n matrix product (a first, small product decides the size: emulated bf16 on a CPU
    without bf16 instructions runs at a few GFLOP/s, and 2048 would take minutes)."""
    if dtype == torch.bfloat16 and not native_cpu_bf16():
        n, repeats = 512, 3
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def half_frozen(model_name: str, data: str) -> str:
    config = RunConfig(model=model_name, data=data, classes=["a", "b"])
    from transferlab.runs import build_model

    return f"freeze:k={build_model(config).num_backbone_groups // 2}"


def run_config(case: dict, strategy: str, epochs: int, max_train: int | None, **train) -> RunConfig:
    options = DataOptions(**case["options"], **({"max_train": max_train} if max_train else {}))
    return RunConfig(model=case["model"], data=case["data"], strategy=strategy,
                     train=TrainConfig(epochs=epochs, device="cpu", **train), data_options=options)


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward, groups counted. torch.utils.flop_counter's own formula ignores `groups`
    for the weight gradient (torch 2.14; pytorch/pytorch#183405), which counts a depthwise convolution's backward
    `channels` times over. For a plain convolution each gradient (input, weight) costs what the forward costs:
    2 * batch * output positions * prod(weight shape), the weight shape already being (C_out, C_in / groups, k..)."""
    if transposed:
        return flop_counter.conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                                               transposed, _output_padding, groups, output_mask, out_shape)
    forward = 2 * grad_out_shape[0] * math.prod(grad_out_shape[2:]) * math.prod(w_shape)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _positions(batch: dict) -> int:
    """Input positions a batch computes on: padded tokens for text (what the FLOPs scale with), else examples."""
    if "input_ids" in batch:
        return batch["input_ids"].numel()
    cut = batch.get("cut_output")
    if isinstance(cut, dict):
        return cut["attention_mask"].numel()
    return batch["labels"].numel()


def step_gflop(config: RunConfig, run_dir: Path, caches: RunCaches) -> float:
    """GFLOP per training example of this run as it ran its first epoch (from a cached batch where it was cached):
    one step counted by FlopCounterMode, scaled for text by the epoch's mean padded length against that batch's
    (batches are padded to their longest text, so one batch alone would misstate the epoch)."""
    data, model, strategy = prepare(config, decoded=caches.decoded)
    trainer = Trainer(model, strategy, data, config.train, run_dir / "flops", feature_store=caches.features)
    trainer.setup(resume=False)
    trainable = trainer._configure_epoch(0)
    k = trainer.cache.groups(trainable)
    entry = trainer.cache.entry("train", k) if k else None
    trainer._train_mode()
    batches = list(trainer.train_loader(0, cached=entry, k=k)) if data.kind == "text" else []
    first = batches[0] if batches else next(iter(trainer.train_loader(0, cached=entry, k=k)))
    batch = trainer._prepare(first)
    with FlopCounterMode(display=False,
                         custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop}) as counter:
        with trainer.precision.autocast():
            logits = model(batch)
        F.cross_entropy(logits.float(), batch["labels"]).backward()
    per_example = counter.get_total_flops() / 1e9 / batch["labels"].numel()
    if batches:
        epoch = sum(_positions(b) for b in batches) / sum(b["labels"].numel() for b in batches)
        per_example *= epoch / (_positions(batch) / batch["labels"].numel())
    return per_example


def with_data(case: dict) -> dict:
    """The case with its data set's folder, $TRANSFERLAB_DATA/NAME."""
    return {**case, "data": str(dataset(case["data"]))}


def flops_only(timings: Path, out: Path) -> list[dict]:
    """The rows of an earlier run (its --json) with GFLOP per example counted again (no training)."""
    saved = json.loads(timings.read_text())
    rows = []
    for row in saved["rows"]:
        if "by hand" not in row["row"]:
            spec, setting = row["row"].rsplit(" ", 1)
            case = with_data(CASES[row["case"]])
            epochs = 1
            max_train = saved.get("sst2_train", 512) if row["case"] == "minilm_l6" else None
            config = run_config(case, spec, epochs, max_train, **SETTINGS[setting])
            caches = RunCaches(features=FeatureStore(config.train.cache_memory_mb * 2**20))
            row = {**row, "gflop_per_sample": step_gflop(config, out / f"{row['case']}_{len(rows)}", caches)}
        rows.append(row)
    return rows


def trainer_row(case: dict, strategy: str, setting: str, epochs: int, max_train: int | None, out: Path) -> dict:
    config = run_config(case, strategy, epochs, max_train, **SETTINGS[setting])
    decoded = DecodedImages(limit_bytes=0) if setting == "before" else DecodedImages()
    caches = RunCaches(decoded=decoded, features=FeatureStore(config.train.cache_memory_mb * 2**20))
    run_dir = out / f"{case['model']}_{strategy.replace(':', '_')}_{setting}"
    start = time.perf_counter()
    metrics = finetune(config, run_dir, caches=caches)
    wall = time.perf_counter() - start
    gflop = step_gflop(config, run_dir, caches)
    return {"row": f"{strategy} {setting}", "wall_s": wall, "samples_per_s": metrics["samples_per_second"],
            "gflop_per_sample": gflop, "precision": config.train.precision,
            "val_accuracy": metrics["val"]["accuracy"],
            "test_accuracy": (metrics["test"] or {}).get("accuracy")}


def probe_by_hand(case: dict, max_train: int | None) -> dict:
    """Features once (eval mode, no autograd), then scikit-learn's logistic regression: the user's script."""
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    config = run_config(case, "linear_probe", 1, max_train)
    data, model, _ = prepare(config)
    model.eval()

    @torch.no_grad()
    def features(dataset):
        xs, ys = [], []
        for batch in ordered_loader(dataset, 64, data.collate):
            xs.append(model.features(batch))
            ys.append(batch["labels"])
        return torch.cat(xs).numpy(), torch.cat(ys).numpy()

    x_train, y_train = features(data.train)
    x_val, y_val = features(data.val)
    classifier = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    accuracy = float((classifier.predict(x_val) == y_val).mean())
    return {"row": "linear_probe by hand (features once + sklearn)", "wall_s": time.perf_counter() - start,
            "samples_per_s": None, "gflop_per_sample": None, "precision": "fp32", "val_accuracy": accuracy,
            "test_accuracy": None}


def plain_loop(case: dict, epochs: int, max_train: int | None) -> dict:
    """`full` by hand: AdamW at one rate, cross-entropy, clipping at 1, on the same DataLoader, fp32."""
    start = time.perf_counter()
    config = run_config(case, "full", epochs, max_train)
    data, model, _ = prepare(config, decoded=DecodedImages(limit_bytes=0))
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n, train_seconds = 0, 0.0
    for _ in range(epochs):
        model.train()
        loader = DataLoader(data.train, batch_size=32, shuffle=True, collate_fn=data.collate)
        epoch_start = time.perf_counter()
        for batch in loader:
            batch = to_device(batch, "cpu")
            loss = F.cross_entropy(model(batch), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            n += batch["labels"].numel()
        train_seconds += time.perf_counter() - epoch_start
        val = evaluate(model, ordered_loader(data.val, 64, data.collate), "cpu")
    return {"row": "full by hand (plain loop)", "wall_s": time.perf_counter() - start,
            "samples_per_s": n / train_seconds, "gflop_per_sample": None, "precision": "fp32",
            "val_accuracy": val["accuracy"], "test_accuracy": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--strategies", default="linear_probe,freeze,full,lora",
                        help="freeze means the first half of the depth groups frozen")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the throughput rows")
    parser.add_argument("--probe-epochs", type=int, default=5, help="epochs of linear_probe (the issue's 5)")
    parser.add_argument("--sst2-train", type=int, default=512, help="SST-2 training phrases (hymenoptera: all)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--emulated-bf16", action="store_true", help="run the bf16 rows on a CPU without bf16")
    parser.add_argument("--flops-only", metavar="JSON", help="count the GFLOP of the rows of an earlier run's --json "
                        "again, without training, and print its table with them")
    args = parser.parse_args()
    if args.flops_only:
        saved = json.loads(Path(args.flops_only).read_text())
        with tempfile.TemporaryDirectory() as tmp:
            rows = flops_only(Path(args.flops_only), Path(tmp))
        for name in dict.fromkeys(r["case"] for r in rows):
            print(f"\n## {name}")
            for row in rows:
                if row["case"] == name:
                    _print(row, saved["peaks"])
        if args.json:
            Path(args.json).write_text(json.dumps({**saved, "rows": rows}, indent=2))
        return

    peaks = {"fp32": peak_gflops(torch.float32), "bf16": peak_gflops(torch.bfloat16)}
    native = native_cpu_bf16()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {native}; peak of a matrix product: "
          f"fp32 {peaks['fp32']:.1f} GFLOP/s (2048), bf16 {peaks['bf16']:.1f} GFLOP/s ({2048 if native else 512})")
    settings = args.settings.split(",")
    if "bf16" in settings and not native and not args.emulated_bf16:
        settings.remove("bf16")
        print("bf16 rows left out: this CPU has no bf16 instructions, bf16 is emulated (the peak above); "
              "--emulated-bf16 runs them anyway")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name in args.cases.split(","):
            case = with_data(CASES[name])
            max_train = args.sst2_train if name == "minilm_l6" else None
            print(f"\n## {name} on {Path(case['data']).name}" + (f" ({max_train} training examples)" if max_train
                                                                   else ""))
            print(f"{'row':<46}{'wall s':>8}{'samples/s':>11}{'GFLOP/s':>9}{'of peak':>9}{'val acc':>9}")
            for strategy in args.strategies.split(","):
                spec = half_frozen(case["model"], case["data"]) if strategy == "freeze" else strategy
                epochs = args.probe_epochs if strategy == "linear_probe" else args.epochs
                found = []
                if strategy == "linear_probe":
                    found.append(probe_by_hand(case, max_train))
                if strategy == "full":
                    found.append(plain_loop(case, epochs, max_train))
                for setting in settings:
                    found.append(trainer_row(case, spec, setting, epochs, max_train, out))
                for row in found:
                    row["case"] = name
                    rows.append(row)
                    _print(row, peaks)
    if args.json:
        Path(args.json).write_text(json.dumps({"peaks": peaks, "sst2_train": args.sst2_train, "rows": rows}, indent=2))


def _print(row: dict, peaks: dict) -> None:
    sps, gflop = row["samples_per_s"], row["gflop_per_sample"]
    achieved = sps * gflop if sps and gflop else None
    share = f"{achieved / peaks[row['precision']]:.1%}" if achieved else "-"
    print(f"{row['row']:<46}{row['wall_s']:>8.1f}{sps if sps else float('nan'):>11.1f}"
          f"{achieved if achieved else float('nan'):>9.1f}{share:>9}{row['val_accuracy']:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
