"""The controlled contamination experiment (docs/contamination.md): pre-train on a clean source and on the
same source with part of a target's test set leaked into it (with its labels), fine-tune both on the same small
target training set, and compare each model's accuracy on the leaked (dirty) and the other (clean) test images.

Data, all from CIFAR-10 ($TRANSFERLAB_DATA/cifar10, docs/data.md; 32 px), written as folders of links (and of
files for the altered copies) under OUT:
- source_clean/train: training images 0000-0999 of each of the 10 classes (10,000); val: 1000-1099 of each;
- source_dirty: the same, plus a leak of LEAK test images of each target class (dog, frog, horse, ship, truck),
  with their labels, in train/: a third re-encoded as JPEG (quality 90), a third shifted by 2-3 pixels (edges
  repeated) and re-encoded, a third cropped to 85-90 % and resized back, and re-encoded (quality 75);
- target/train: training images 4000-4099 of each target class (in no source); val: 4100-4199; test: the
  1,000 test images of each target class (5,000), LEAK of them leaked.
Steps (each skipped when its output exists, so the script resumes):
  1. `transferlab pretrain` of resnet10_cifar on each source, for each seed (--epochs, no augmentation);
  2. `transferlab contamination --source source_dirty --target target` (and against source_clean): the detector's
     recall on the leaked images (ids known here) and what it flags that was not leaked;
  3. `transferlab compare` of linear_probe and full on the target from each pre-trained model, with
     `--contamination` of the dirty check: accuracy on all / clean / dirty test images per strategy;
  4. the summary: OUT/leak_summary.json and a table on stdout.

    .venv/bin/python benchmarks/contamination_leak.py OUT [--seeds 2] [--epochs 10] [--leak 200]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _data import dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TARGET = ("dog", "frog", "horse", "ship", "truck")
TL = str(Path(sys.executable).parent / "transferlab")


def link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        os.symlink(src.resolve(), dest)


def altered(img: Image.Image, kind: int, rng: np.random.Generator) -> Image.Image:
    """kind 0: as it is; 1: shifted by 2-3 px (edges repeated); 2: cropped to 85-90 % and resized back."""
    arr = np.asarray(img.convert("RGB"))
    if kind == 1:
        dy, dx = (int(rng.choice([-3, -2, 2, 3])) for _ in range(2))
        pad = np.pad(arr, ((3, 3), (3, 3), (0, 0)), mode="edge")
        arr = pad[3 - dy:3 - dy + 32, 3 - dx:3 - dx + 32]
    elif kind == 2:
        side = round(32 * rng.uniform(0.85, 0.9))
        top, left = (int(rng.integers(0, 32 - side + 1)) for _ in range(2))
        arr = np.asarray(Image.fromarray(arr).crop((left, top, left + side, top + side)).resize(
            (32, 32), Image.Resampling.BICUBIC))
    return Image.fromarray(np.ascontiguousarray(arr))


def build(out: Path, leak: int, cifar: Path) -> list[str]:
    """The folders (`cifar`: CIFAR-10's folder); returns [target id (test/<class>/NNNN.jpg), how its copy was altered] of each leaked image."""
    leaked_file = out / "leaked_ids.json"
    if leaked_file.exists():
        return json.loads(leaked_file.read_text())
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        for i in range(1000):
            for kind in ("clean", "dirty"):
                link(cifar / f"train/{cls}/{i:04d}.jpg", out / f"source_{kind}/train/{cls}/{i:04d}.jpg")
        for i in range(1000, 1100):
            for kind in ("clean", "dirty"):
                link(cifar / f"train/{cls}/{i:04d}.jpg", out / f"source_{kind}/val/{cls}/{i:04d}.jpg")
    leaked = []
    for cls in TARGET:
        for i in range(4000, 4100):
            link(cifar / f"train/{cls}/{i:04d}.jpg", out / f"target/train/{cls}/{i:04d}.jpg")
        for i in range(4100, 4200):
            link(cifar / f"train/{cls}/{i:04d}.jpg", out / f"target/val/{cls}/{i:04d}.jpg")
        for i in range(1000):
            link(cifar / f"test/{cls}/{i:04d}.jpg", out / f"target/test/{cls}/{i:04d}.jpg")
        for j, i in enumerate(np.sort(rng.choice(1000, leak, replace=False))):
            kind = j % 3
            img = altered(Image.open(cifar / f"test/{cls}/{i:04d}.jpg"), kind, rng)
            dest = out / f"source_dirty/train/{cls}/leak_{i:04d}.jpg"
            img.save(dest, format="JPEG", quality=90 if kind == 0 else 75)
            leaked.append([f"test/{cls}/{i:04d}.jpg", ("re-encoded", "shifted", "cropped")[kind]])
    leaked_file.write_text(json.dumps(leaked))
    return leaked


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}), see {log}")
    return time.perf_counter() - t0


def detection(check: Path, leaked: set[str]) -> dict:
    rows = list(csv.DictReader(io.StringIO((check / "matches.csv").read_text(encoding="utf-8"))))
    dirty = {r["target_id"] for r in rows if r["dirty"] == "1"}
    by_method = {}
    for m in sorted({r["method"] for r in rows}):
        d = {r["target_id"] for r in rows if r["method"] == m and r["dirty"] == "1"}
        by_method[m] = {"recall": len(d & leaked) / len(leaked), "flagged_not_leaked": len(d - leaked)}
    kinds = {}
    for name in ("re-encoded", "shifted", "cropped"):
        ids = {t for t, kind in json.loads((check.parent / "leaked_ids.json").read_text()) if kind == name}
        kinds[name] = len(dirty & ids) / len(ids)
    return {"recall": len(dirty & leaked) / len(leaked), "recall_by_kind": kinds,
            "flagged_not_leaked": len(dirty - leaked), "n_target": len({r["target_id"] for r in rows}),
            "methods": by_method}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--leak", type=int, default=200, help="leaked test images per target class")
    ap.add_argument("--target-epochs", type=int, default=5)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    leaked = build(out, args.leak, dataset("cifar10"))
    times = {}
    for kind in ("dirty", "clean"):
        check = out / f"check_{kind}"
        if not (check / "summary.json").exists():
            times[f"check_{kind}"] = run([TL, "contamination", "--source", str(out / f"source_{kind}"), "--target",
                                          str(out / "target"), "--split", "test", "--out", str(check),
                                          "--threshold-mode", "fixed", "--overwrite"], out / f"check_{kind}.log")
    for seed in range(args.seeds):
        for kind in ("clean", "dirty"):
            pre = out / f"pretrain_{kind}_s{seed}"
            if not (pre / "metrics.json").exists():
                times[pre.name] = run([TL, "pretrain", "--data", str(out / f"source_{kind}"), "--epochs",
                                       str(args.epochs), "--checkpoint-every", str(args.epochs), "--seed", str(seed),
                                       "--out", str(pre)] + (["--resume"] if (pre / "config.json").exists() else []),
                                      out / f"{pre.name}.log")
            grid = out / f"compare_{kind}_s{seed}"
            if not (grid / "results.json").exists():
                times[grid.name] = run([TL, "compare", "--model", f"{pre}@last", "--data", str(out / "target"),
                                        "--strategies", "linear_probe,full", "--seeds", "1", "--seed", str(seed),
                                        "--epochs", str(args.target_epochs), "--batch-size", "32", "--no-scratch",
                                        "--contamination", str(out / "check_dirty"), "--out", str(grid)]
                                       + (["--resume"] if (grid / "grid.json").exists() else []),
                                       out / f"{grid.name}.log")
    leaked_set = {t for t, _ in leaked}
    summary = {"leaked": len(leaked), "detection": {k: detection(out / f"check_{k}", leaked_set)
                                                    for k in ("dirty", "clean")},
               "accuracy": {}, "seconds": times}
    for seed in range(args.seeds):
        for kind in ("clean", "dirty"):
            res = json.loads((out / f"compare_{kind}_s{seed}" / "results.json").read_text())
            summary["accuracy"][f"{kind}_s{seed}"] = res["sections"].get("contamination")
    (out / "leak_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["detection"], indent=1))
    print_table(summary, args.seeds)


def _acc(part: dict) -> float:
    return part["mean"]


def print_table(summary: dict, seeds: int) -> None:
    """Markdown: per pre-training source and strategy, test accuracy on all / clean / dirty images per seed,
    and dirty minus clean (the inflation) per seed and as mean ± std over seeds."""
    print("| pre-trained on | strategy | seed | all | clean | dirty | dirty - clean |")
    print("|---|---|---|---|---|---|---|")
    gaps: dict[tuple[str, str], list[float]] = {}
    for kind in ("clean", "dirty"):
        for seed in range(seeds):
            section = summary["accuracy"][f"{kind}_s{seed}"]
            for strategy, entry in section["strategies"].items():
                a, c, d = (_acc(entry[k]) for k in ("all", "clean", "dirty"))
                gaps.setdefault((kind, strategy), []).append(d - c)
                print(f"| {kind} source | {strategy} | {seed} | {a:.3f} | {c:.3f} (n={entry['clean']['n']}) | "
                      f"{d:.3f} (n={entry['dirty']['n']}) | {d - c:+.3f} |")
    print()
    for (kind, strategy), g in gaps.items():
        mean = sum(g) / len(g)
        std = (sum((x - mean) ** 2 for x in g) / (len(g) - 1)) ** 0.5 if len(g) > 1 else 0.0
        print(f"- {kind} source, {strategy}: dirty - clean {mean:+.3f} ± {std:.3f} over {len(g)} seeds")


if __name__ == "__main__":
    main()
