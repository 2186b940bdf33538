"""The CIFAR-10 corruption benchmark of docs/domain-adaptation.md: the 15 ImageNet-C / CIFAR-10-C corruptions
(Hendrycks & Dietterich 2019) at one severity, against a source model pre-trained on CIFAR-10 train; test-time
adaptation (AdaBN, TENT) and unsupervised domain adaptation (DANN, CDAN, MCC) beside the unadapted source.

Steps (each skipped when its output exists, so a killed study continues):
  1. `transferlab pretrain` resnet10_cifar on the ten CIFAR-10 classes (45,000 images, 10% validation, augmented);
  2. a stratified, seeded subset of CIFAR-10 test (`--test-per-class`) written as links, and `transferlab data
     corrupt` of it for each kind at `--severity` (CIFAR-10-C's published parameters);
  3. per kind and seed: `adapt --method adabn` and `adapt --method tent --online` (the stream shuffled by the seed;
     the source's own accuracy is `accuracy_before` of the same call), in process;
  4. the unlabelled target for domain adaptation: `--target-per-kind` CIFAR-10 *training* images corrupted by each
     kind (the test images are never adapted on), pooled; `finetune` from the source with `full` (source-only) and
     `dann`, `cdan`, `mcc`, each on `--max-train` labelled source images, `--uda-seeds` seeds; every run scored on
     every corrupted test set;
  5. per kind and averaged: error of each method, and each method against the source (paired on the same
     examples over seeds, `transferlab.stats.paired_runs`, Holm over the comparisons), the time of each method.

With `--dataset hymenoptera` the same study on photographs: the source is `efficientnet_lite0` (ImageNet weights)
fine-tuned (`full`) on hymenoptera train; every image is first resized to 256 px and centre-cropped to 224 px, as
ImageNet-C prepares its images, so the corruptions take ImageNet-C's parameters; the scored images are the whole
validation split; the unlabelled target is the training images, each corrupted by one kind (a seeded assignment,
about 16 per kind); the domain adaptation runs start from the ImageNet weights, as the source did, on all of
hymenoptera train. Hymenoptera has no third split: every run chooses its epoch on the clean validation images, whose
corrupted copies are scored (no corrupted image takes part in any choice).

Usage: python benchmarks/corruption_benchmark.py [OUT_DIR] [--dataset cifar10|hymenoptera] [--test-per-class 200]
[--seeds 3] [--uda-seeds N]   (run it alone)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
TL = str(ROOT / ".venv" / "bin" / "transferlab")
DATA = Path(os.environ.get("TRANSFERLAB_DATA", ROOT.parent / "shared" / "data"))
KINDS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
         "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"]
UDA = ["full", "dann", "cdan", "mcc"]
# The TENT paper (Wang et al., ICLR 2021, Table 2): CIFAR-10-C severity 5, WideResNet-28, mean error (%).
TENT_PAPER = {"source": 43.5, "adabn": 20.4, "tent": 18.6}


def sh(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"failed ({code}): {' '.join(cmd)}\n" + log.read_text()[-2000:])
    return time.perf_counter() - t0


def copy_subset(src: Path, dests: list[Path], split: str, per_class: int, seed: int) -> None:
    """Each dest/<split>/<class>/ gets copies of its own `per_class` images of src/<split>/<class>/ (seeded, the
    dests disjoint). Copies, not links: `data corrupt` leaves out links that point outside its --data."""
    rng = np.random.default_rng(seed)
    for folder in sorted((src / split).iterdir()):
        files = sorted(folder.iterdir())
        pick = rng.choice(len(files), per_class * len(dests), replace=False)
        for d, dest in enumerate(dests):
            (dest / split / folder.name).mkdir(parents=True, exist_ok=True)
            for i in np.sort(pick[d * per_class:(d + 1) * per_class]):
                shutil.copyfile(files[i], dest / split / folder.name / files[i].name)


def prepare_cifar(out: Path, args) -> None:
    cifar = DATA / "cifar10"
    if not (out / "source.seconds").exists():
        print("pretrain the source on CIFAR-10 train", flush=True)
        resume = ["--resume"] if (out / "source" / "config.json").exists() else []
        t = sh([TL, "pretrain", "--data", str(cifar), "--val-fraction", "0.1", "--augment", "--epochs",
                str(args.source_epochs), "--checkpoint-every", str(args.source_epochs), "--out", str(out / "source"),
                *resume], out / "source.log")
        (out / "source.seconds").write_text(f"{t:.1f}")
    clean = out / "clean"
    if not clean.exists():  # test/: the images scored; train/: a few, because a folder needs a training split
        copy_subset(cifar, [clean], "test", args.test_per_class, 0)
        copy_subset(cifar, [clean], "train", 10, 0)
        copy_subset(cifar, [out / "target_clean" / k for k in KINDS], "train", args.target_per_kind // 10, 1)
    corrupt_all(out, clean, args)


def corrupt_all(out: Path, clean: Path, args) -> None:
    """`data corrupt` with every kind: the scored images (clean/ to corrupt/KIND) and each kind's own unlabelled
    target images (target_clean/KIND to target_parts/KIND), which are then pooled into target/."""
    for kind in KINDS:
        for name, folder in (("corrupt", clean), ("target_parts", out / "target_clean" / kind)):
            if not (out / name / f"{kind}.seconds").exists():
                (out / name).mkdir(parents=True, exist_ok=True)
                t = sh([TL, "data", "corrupt", "--data", str(folder), "--kind", kind, "--severity",
                        str(args.severity), "--out", str(out / name / kind), "--seed", "0"], out / name / f"{kind}.log")
                (out / name / f"{kind}.seconds").write_text(f"{t:.1f}")
    target = out / "target"
    if not target.exists():  # each kind corrupted its own training images: pooled into one target
        for kind in KINDS:
            for folder in sorted((out / "target_parts" / kind / "train").iterdir()):
                (target / "train" / folder.name).mkdir(parents=True, exist_ok=True)
                for f in sorted(folder.iterdir()):
                    shutil.copyfile(f, target / "train" / folder.name / f"{kind}_{f.name}")


def imagenet_c_crop(src: Path, dest: Path) -> None:
    """ImageNet-C's preparation of an image: resize the shorter side to 256 px (bilinear), centre-crop 224 px."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        scale = 256 / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        dest.parent.mkdir(parents=True, exist_ok=True)
        img.crop((left, top, left + 224, top + 224)).save(dest.with_suffix(".png"))


def prepare_hymenoptera(out: Path, args) -> None:
    hym = DATA / "hymenoptera"
    if not (out / "source.seconds").exists():
        print("fine-tune the source: efficientnet_lite0 on hymenoptera train", flush=True)
        t = sh([*uda_command(out, args), "--strategy", "full", "--epochs", str(args.uda_epochs), "--seed", "0",
                "--out", str(out / "source"), "--overwrite"], out / "source.log")
        (out / "source.seconds").write_text(f"{t:.1f}")
    clean = out / "clean"
    if not clean.exists():  # test/: the validation images, scored; train/: two per class (a folder needs one)
        for folder in sorted((hym / "val").iterdir()):
            for f in sorted(folder.iterdir()):
                imagenet_c_crop(f, clean / "test" / folder.name / f.name)
            for f in sorted((hym / "train" / folder.name).iterdir())[:2]:
                imagenet_c_crop(f, clean / "train" / folder.name / f.name)
        files = sorted(f for folder in (hym / "train").iterdir() for f in folder.iterdir())
        kind_of = np.random.default_rng(1).permutation(len(files)) % len(KINDS)
        for f, k in zip(files, kind_of):
            imagenet_c_crop(f, out / "target_clean" / KINDS[k] / "train" / f.parent.name / f.name)
    corrupt_all(out, clean, args)


def uda_command(out: Path, args) -> list[str]:
    """The finetune arguments of a domain adaptation run, without strategy, seed and output."""
    if args.dataset == "hymenoptera":
        return [TL, "finetune", "--model", "efficientnet_lite0", "--data", str(DATA / "hymenoptera")]
    return [TL, "finetune", "--model", f"{out / 'source'}@last", "--data", str(DATA / "cifar10"), "--max-train",
            str(args.max_train), "--max-val", str(args.max_val)]


def adapt_all(out: Path, args) -> dict:
    from transferlab.diagnostics.tta import TentConfig, adapt_run

    path = out / "adapt.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for kind in KINDS:
        for seed in range(args.seeds):
            for method in ("adabn", "tent"):
                key = f"{kind}/{method}/{seed}"
                if key in done:
                    continue
                t0 = time.perf_counter()
                r = adapt_run(out / "source", str(out / "corrupt" / kind), out / "adapted" / kind / method / str(seed),
                              method=method, split="test", seed=seed, overwrite=True, batch_size=args.tta_batch,
                              tent=TentConfig(online=True) if method == "tent" else None)
                done[key] = {"before": r.correct_before, "after": r.correct_after,
                             "seconds": time.perf_counter() - t0}
                print(f"  {key}: {r.accuracy_before:.3f} -> {r.accuracy_after:.3f}", flush=True)
                path.write_text(json.dumps(done))
    return done


def uda_all(out: Path, args) -> dict:
    from transferlab.runs import load_run
    from transferlab.training.evaluate import evaluate_examples

    path = out / "uda.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for strategy in UDA:
        for seed in range(args.uda_seeds):
            key = f"{strategy}/{seed}"
            if key in done:
                continue
            run = out / "uda" / strategy / str(seed)
            run.parent.mkdir(parents=True, exist_ok=True)
            t = sh([*uda_command(out, args), "--target-data", str(out / "target"), "--strategy", strategy,
                    "--epochs", str(args.uda_epochs), "--seed", str(seed), "--out", str(run), "--overwrite"],
                   run.parent / f"{seed}.log")
            scores = {}
            for kind in KINDS:
                _, data, model, _ = load_run(run, str(out / "corrupt" / kind), augment=False)
                found = evaluate_examples(model, data.test, data.collate, "cpu", 256)
                scores[kind] = [int(bool(c)) for c in found.correct]
            metrics = json.loads((run / "metrics.json").read_text())
            done[key] = {"correct": scores, "seconds": t, "val": metrics["val"]["accuracy"],
                         "dev": metrics.get("dev")}
            print(f"  {key}: mean corrupted accuracy {np.mean([np.mean(v) for v in scores.values()]):.3f}", flush=True)
            path.write_text(json.dumps(done))
    return done


def summarise(out: Path, adapted: dict, uda: dict, args) -> None:
    from transferlab import stats

    seeds = range(args.seeds)
    per = {"source": {}, "adabn": {}, "tent": {}}
    for kind in KINDS:
        per["source"][kind] = [adapted[f"{kind}/adabn/{s}"]["before"] for s in seeds]
        for m in ("adabn", "tent"):
            per[m][kind] = [adapted[f"{kind}/{m}/{s}"]["after"] for s in seeds]
    for strategy in UDA:
        per[strategy] = {kind: [uda[f"{strategy}/{s}"]["correct"][kind] for s in range(args.uda_seeds)]
                         for kind in KINDS}
    pooled = {m: [np.concatenate([per[m][k][s] for k in KINDS]) for s in range(len(per[m][KINDS[0]]))] for m in per}
    error = {m: {k: 100 * (1 - np.mean(per[m][k])) for k in KINDS} for m in per}
    comparisons = [("adabn", "source"), ("tent", "source"), ("tent", "adabn"), ("dann", "full"), ("cdan", "full"),
                   ("mcc", "full"), ("full", "source")]
    tested = stats.holm([stats.paired_runs(pooled[a], pooled[b]) for a, b in comparisons])
    result = {"dataset": args.dataset, "kinds": KINDS, "severity": args.severity, "seeds": args.seeds,
              "test_per_class": args.test_per_class,
              "error": error, "mean_error": {m: float(np.mean(list(error[m].values()))) for m in per},
              "comparisons": {f"{a} - {b}": c.to_dict() for (a, b), c in zip(comparisons, tested)},
              "seconds": {"source_training": float((out / "source.seconds").read_text()),
                          **{f"{m}_per_kind": float(np.mean([v["seconds"] for k, v in adapted.items()
                                                             if f"/{m}/" in k])) for m in ("adabn", "tent")},
                          **{f"{s}_run": float(np.mean([uda[f"{s}/{i}"]["seconds"] for i in range(args.uda_seeds)]))
                             for s in UDA}},
              "uda_selection": {s: {"val": [uda[f"{s}/{i}"]["val"] for i in range(args.uda_seeds)],
                                    "dev": [uda[f"{s}/{i}"]["dev"] for i in range(args.uda_seeds)]} for s in UDA},
              "uda_seeds": args.uda_seeds,
              "tent_paper": TENT_PAPER}
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    methods = list(per)
    print("| corruption | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for k in KINDS:
        print(f"| {k} | " + " | ".join(f"{error[m][k]:.1f}" for m in methods) + " |")
    print("| **mean** | " + " | ".join(f"**{result['mean_error'][m]:.1f}**" for m in methods) + " |")
    print()
    for (a, b), c in zip(comparisons, tested):
        print(f"{a} - {b} (accuracy, pooled over kinds): {100 * c.estimate:+.1f} pt "
              f"[{100 * c.low:+.1f}, {100 * c.high:+.1f}] {'beyond noise' if c.significant else 'within noise'}")
    print(json.dumps(result["seconds"], indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="/tmp/transferlab_corruption_benchmark")
    ap.add_argument("--dataset", choices=["cifar10", "hymenoptera"], default="cifar10")
    ap.add_argument("--severity", type=int, default=5)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--target-per-kind", type=int, default=300, help="corrupted training images per kind")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--source-epochs", type=int, default=10)
    ap.add_argument("--uda-seeds", type=int, default=None, help="seeds of the UDA runs (default: --seeds)")
    ap.add_argument("--max-train", type=int, default=5000, help="labelled source images of the UDA runs")
    ap.add_argument("--max-val", type=int, default=2000, help="source validation images of the UDA runs")
    ap.add_argument("--uda-epochs", type=int, default=2, help="epochs of the UDA runs (hymenoptera: and the source)")
    ap.add_argument("--tta-batch", type=int, default=None, help="batch of the test-time stream (default: the run's)")
    args = ap.parse_args()
    args.uda_seeds = args.uda_seeds or args.seeds
    if not (DATA / args.dataset).is_dir():
        sys.exit(f"needs $TRANSFERLAB_DATA/{args.dataset} (not under {DATA}): see docs/data.md")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (prepare_hymenoptera if args.dataset == "hymenoptera" else prepare_cifar)(out, args)
    adapted = adapt_all(out, args)
    uda = uda_all(out, args)
    summarise(out, adapted, uda, args)


if __name__ == "__main__":
    main()
