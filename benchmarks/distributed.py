"""Training throughput of one run on 1 and on 2 processes (DistributedDataParallel, gloo on CPU), in one run.

    .venv/bin/python benchmarks/distributed.py [--model efficientnet_lite0] [--data DIR]
        [--image-size 128] [--batch-size 16] [--epochs 2] [--repeats 2] [--out /tmp/transferlab_distributed]
    (--data: default $TRANSFERLAB_DATA/hymenoptera, docs/data.md)

Each configuration is the real `transferlab finetune` command (full fine-tuning, no augmentation); its
samples per second are what the trainer measured over its training steps (metrics.json: training examples /
training seconds, start-up and evaluation left out), and the wall time is the whole command's. The three
configurations alternate, `--repeats` times, so that a slow minute of the shared machine does not fall on one:

    1 process, every core's threads       what a user runs today
    1 process, threads / 2                the per-process share of the 2-process run
    2 processes, threads / 2 each         --nproc 2; the same global batch (2 x --batch-size / 2)

Scaling efficiency = samples/s of 2 processes / (2 x samples/s of 1 process with half the threads): 1.0 is
perfect scaling; below 1 is what the gradient all-reduce and the second process cost. On a GPU machine
(--device cuda) the same script measures 1 GPU with --precision bf16 --memory-format channels_last instead.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _data import dataset


def run(args, name: str, nproc: int, threads: int, batch: int, extra: list[str]) -> dict:
    out = Path(args.out) / name
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "transferlab", "finetune", "--model", args.model, "--data", args.data,
               "--image-size", str(args.image_size), "--batch-size", str(batch), "--epochs", str(args.epochs),
               "--strategy", "full", "--no-cache", "--max-train", str(args.max_train), "--max-val", "64",
               "--out", str(out), *extra]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"samples_per_second": metrics["samples_per_second"], "wall_seconds": wall,
            "val_accuracy": metrics["val"]["accuracy"], "global_batch_size": metrics.get("global_batch_size")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--data", help="an image folder (default: $TRANSFERLAB_DATA/hymenoptera, docs/data.md)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="the global batch of every configuration")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-train", type=int, default=244)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="/tmp/transferlab_distributed")
    args = p.parse_args()
    args.data = args.data or str(dataset("hymenoptera", "--data"))
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    half = max(1, threads // 2)
    if args.device.startswith("cuda"):
        configs = [("1 GPU fp32", 1, threads, args.batch_size, ["--device", args.device]),
                   ("1 GPU bf16 channels-last", 1, threads, args.batch_size,
                    ["--device", args.device, "--precision", "bf16", "--memory-format", "channels_last"])]
    else:
        configs = [(f"1 process x {threads} threads", 1, threads, args.batch_size, ["--device", "cpu"]),
                   (f"1 process x {half} threads", 1, half, args.batch_size, ["--device", "cpu"]),
                   (f"2 processes x {half} threads", 2, half, args.batch_size // 2, ["--device", "cpu"])]
    results: dict[str, list[dict]] = {name: [] for name, *_ in configs}
    for repeat in range(args.repeats):
        for i, (name, nproc, n_threads, batch, extra) in enumerate(configs):
            results[name].append(run(args, f"r{repeat}_{i}", nproc, n_threads, batch, extra))
            print(f"repeat {repeat + 1}: {name}: {results[name][-1]['samples_per_second']:.1f} samples/s", flush=True)
    print(f"\n{args.model} on {Path(args.data).name}, {args.image_size} px, global batch {args.batch_size}, "
          f"{args.epochs} epochs of {args.max_train} examples, {args.repeats} repeats (mean, min-max)\n")
    print("| configuration | training samples/s | wall s (whole command) | val accuracy |")
    print("|---|---|---|---|")
    means = {}
    for name, rows in results.items():
        sps = [r["samples_per_second"] for r in rows]
        means[name] = statistics.mean(sps)
        wall = [r["wall_seconds"] for r in rows]
        accuracies = ", ".join(f"{r['val_accuracy']:.3f}" for r in rows)
        print(f"| {name} | {means[name]:.1f} ({min(sps):.1f}-{max(sps):.1f}) | {statistics.mean(wall):.1f} | "
              f"{accuracies} |")
    if not args.device.startswith("cuda"):
        one, half_one, two = (means[name] for name, *_ in configs)
        print(f"\nscaling efficiency (2 processes / (2 x 1 process with {half} thread(s))): "
              f"{two / (2 * half_one):.2f}; 2 processes / 1 process with all {threads} threads: {two / one:.2f}")


if __name__ == "__main__":
    main()
