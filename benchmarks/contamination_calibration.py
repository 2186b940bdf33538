"""Calibrate the image methods' thresholds on CIFAR-10 (docs/contamination.md, `detect.DEFAULT_THRESHOLDS`).

Positives: the tool's own near-copies (shifted, cropped, rescaled, colour-jittered, JPEG re-encoded, and a
combination) of `--copied` training images, matched against the training set; negatives: `--negatives`
training images held out of the index (CIFAR-10's training set holds near-copies of itself, so some of these
"false positives" are real: an upper bound), and, as a second estimate, test images matched against the
training images of the *other* classes (a photograph is rarely in two classes, so those are strangers).
For each method: recall per copy kind, false-positive rates and precision over a sweep of thresholds.

    .venv/bin/python benchmarks/contamination_calibration.py [--max-source N] [--out calibration.json]
        [--no-flip] [--no-crop-views] [--retrieval-compare [--larger-k K ...]]

`--retrieval-compare` measures the aligned method's candidate retrieval instead (docs/contamination.md,
"Retrieval"): the same copies and negatives, once with the plain candidates (top k by thumbnail and embedding,
the hashes' nearest) and once with crop views and flips added; recall per kind and seconds of each. The
49,000-source number of the docs is measured by

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/contamination_calibration.py --copied 500 --negatives 1000 \
        --retrieval-compare --larger-k 20 40 --out retrieval_49000.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _data import dataset
from transferlab.contamination.detect import (
    DEFAULT_K,
    IMAGE_METHODS,
    calibrate_images,
    match_images,
)
from transferlab.contamination.image_features import Embedder, image_features
from transferlab.data._images import read_image
from transferlab.models import create_model

SWEEP = {"phash": list(range(21)), "dhash": list(range(21)),
         "embedding": [round(0.80 + 0.01 * i, 2) for i in range(21)],
         "aligned": [round(0.70 + 0.01 * i, 2) for i in range(31)]}


def files(root: Path, split: str) -> list[Path]:
    return sorted(root.glob(f"{split}/*/*.jpg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="CIFAR-10's folder (default: $TRANSFERLAB_DATA/cifar10, docs/data.md)")
    ap.add_argument("--max-source", type=int, default=None, help="first N training images (a random sample)")
    ap.add_argument("--copied", type=int, default=500)
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--cross-class", type=int, default=1000, help="test images matched against other classes")
    ap.add_argument("--embed-size", type=int, default=64)
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="candidates per target for aligned, by each retrieval")
    ap.add_argument("--no-flip", dest="flip", action="store_false", help="do not search mirrored copies")
    ap.add_argument("--no-crop-views", dest="crop_views", action="store_false",
                    help="no candidates by the crop views' thumbnails")
    ap.add_argument("--retrieval-compare", action="store_true",
                    help="plain retrieval against crop views + flips, on the same copies (no sweep, no cross-class)")
    ap.add_argument("--larger-k", type=int, nargs="*", default=[],
                    help="with --retrieval-compare: also crop views + flips with these k (the larger set's cost)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(args.data) if args.data else dataset("cifar10", "--data")
    train = files(root, "train")
    rng = np.random.default_rng(0)
    if args.max_source:
        train = [train[i] for i in np.sort(rng.choice(len(train), args.max_source, replace=False))]
    embedder = Embedder(create_model("efficientnet_lite0", 2), size=args.embed_size)
    t0 = time.perf_counter()
    src = image_features([str(p) for p in train], [str(p.relative_to(root)) for p in train], embedder)
    print(f"features of {len(src)} training images: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if args.retrieval_compare:
        return retrieval_compare(src, embedder, args)
    t0 = time.perf_counter()
    report = calibrate_images(src, lambda i: np.asarray(read_image(src.paths[i])), embedder,
                              n_copied=args.copied, n_negatives=args.negatives, k=args.k, sweep=SWEEP,
                              flip=args.flip, crops=args.crop_views)
    print(f"calibration: {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    # second FPR estimate: test images against the training images of the other classes
    test = files(root, "test")
    pick = [test[i] for i in np.sort(rng.choice(len(test), args.cross_class, replace=False))]
    tf = image_features([str(p) for p in pick], [str(p.relative_to(root)) for p in pick], embedder)
    src_class = np.array([p.split("/")[1] for p in src.ids])
    cross = {m: {str(s): 0 for s in SWEEP.get(m, [None])} for m in IMAGE_METHODS}
    for cls in sorted(set(src_class)):
        rows = [i for i, t in enumerate(tf.ids) if t.split("/")[1] == cls]
        if not rows:
            continue
        found = match_images(tf.subset(rows), src.subset(np.flatnonzero(src_class != cls)), k=args.k,
                             flip=args.flip, crops=args.crop_views)
        for m, res in found.items():
            for s in SWEEP.get(m, [None]):
                cross[m][str(s)] += int(res.dirty(s).sum())
    report["cross_class_fpr"] = {m: {s: c / len(tf) for s, c in v.items()} for m, v in cross.items()}
    report["n_cross_class"] = len(tf)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    for m, e in report["methods"].items():
        print(f"\n{m}: at {e['match_if']}: recall {e['recall']:.3f} by kind "
              f"{ {k: round(v, 3) for k, v in e['recall_by_kind'].items()} } FPR {e['false_positive_rate']}")
        for s, row in zip(SWEEP.get(m, []), e.get("sweep", [])):
            print(f"  t={row['threshold']:<5} recall {row['recall']:.3f} min-kind "
                  f"{min(row['recall_by_kind'].values()):.3f} "
                  f"kinds {[round(v, 2) for v in row['recall_by_kind'].values()]} FPR(held-out) "
                  f"{row['false_positive_rate']:.4f} FPR(cross-class) {report['cross_class_fpr'][m][str(s)]:.4f}")
    print("\nany method:", json.dumps(report["any"]))


def retrieval_compare(src, embedder, args) -> None:
    """The aligned method at the fixed threshold, plain retrieval against crop views + flips: recall per kind,
    held-out false-positive rate and seconds (features not counted: computed once, above)."""
    out = {"n_sources": None, "k": args.k, "runs": {}}
    runs = [("plain", False, False, args.k), ("crop_views", False, True, args.k), ("crop_views+flip", True, True, args.k)]
    runs += [(f"crop_views+flip k={k}", True, True, k) for k in args.larger_k]  # a larger candidate set: its cost
    for name, flip, crops, k in runs:
        t0 = time.perf_counter()
        rep = calibrate_images(src, lambda i: np.asarray(read_image(src.paths[i])), embedder, methods=("aligned",),
                               n_copied=args.copied, n_negatives=args.negatives, k=k, flip=flip, crops=crops)
        e = rep["methods"]["aligned"]
        out["n_sources"] = rep["n_sources"]
        out["runs"][name] = {"seconds": round(time.perf_counter() - t0, 1), "recall": e["recall"],
                             "recall_by_kind": e["recall_by_kind"], "fpr_held_out": e["false_positive_rate"],
                             "n_copies": rep["n_copies"], "n_negatives": rep["n_negatives"]}
        r = out["runs"][name]
        print(f"{name:16} {r['seconds']:6.1f}s recall {r['recall']:.3f} "
              f"{ {k: round(v, 3) for k, v in r['recall_by_kind'].items()} } FPR {r['fpr_held_out']:.4f}",
              file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
