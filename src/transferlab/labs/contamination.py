"""Lab `contamination`: test examples the model trained on score higher than the others, and the detector finds
them.

Claim (GPT-3, Brown et al. 2020, Appendix C; the project's contamination check, docs/contamination.md): when
evaluation examples leak into the data a model is trained on, its score on those examples is inflated; scoring
the clean and the dirty parts of the test set apart shows it, and a near-duplicate detector finds the leaked
examples.

What is run (a small version of benchmarks/contamination_leak.py, which leaks CIFAR-10 test images into
pre-training): the bundled digits, written as an image folder under the lab's own folder (DIR/data: train, val and
test splits of fixed, seeded images). Per seed, a leak of test images (with their labels) is drawn and added to
the training split, a third as they are, a third with the intensity scaled by 0.8, a third rescaled to 16 x 16
pixels; `efficientnet_lite0` (ImageNet, 64 px) is fine-tuned on the clean training split and on the leaked one.
`transferlab contamination`'s check (contamination/check.py, every image method, as the command runs by default)
compares the leaked training split with the test split; both runs are then scored on the clean and dirty test
images it reports (contamination/subsets.py, what `evaluate --contamination` does). The check's thresholds are
chosen on the leaked training split itself (contamination/calibrate.py): each method flags at most 0.001 of
training images matched against the rest of the training split, and a method that cannot reach that rate on
8 x 8 digits (dHash: many distinct digits share a hash) is disabled. Thresholds calibrated on CIFAR-10 at 32 px
would flag nearly every test image here: at 8 x 8 every digit has a close look-alike.

Checks:
- "the detector finds the leak": recall on the leaked test images minus a floor of 0.9, per seed.
- "few false alarms": 0.02 minus the share of the other (not leaked) test images the check flags, per seed: the
  dirty part should be the leak, not every look-alike (0.02: each method is held to 0.001 on about 550 training
  images, which bounds its rate at about 0.0055 (95 %), and a test image is dirty when any of three or four
  methods flags it).
- "the leak inflates the score": accuracy on the dirty minus the clean test images of the contaminated run, minus
  the same difference for the clean run (the control: the flagged images may be easier or harder, and the leaked
  run has more training images), per seed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from transferlab.labs._runs import DIGITS, IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

RECALL_FLOOR = 0.9
CHECK_FPR = 0.001  # the false-positive rate each of the check's methods is calibrated to (the command's default)
FPR_CEILING = 0.02  # any of 3-4 methods, each at most 0.001 on ~550 null images (95 % bound about 0.0055 each)
KINDS = ("as_is", "dimmed", "rescaled")  # as they are; intensity x 0.8; rescaled to 16 x 16 px


def _sizes(quick: bool) -> dict:
    return {"train": 200, "val": 200, "test": 400, "leak": 100, "epochs": 3} if quick else \
        {"train": 400, "val": 300, "test": 600, "leak": 150, "epochs": 5}


def leaked_copy(image: np.ndarray, kind: int) -> np.ndarray:
    """A light alteration of an 8 x 8 uint8 digit: 0 as it is, 1 intensity scaled by 0.8, 2 rescaled to 16 x 16
    (bilinear)."""
    from PIL import Image

    if kind == 0:
        return image.copy()
    if kind == 1:
        return np.round(image.astype(np.float64) * 0.8).astype(np.uint8)
    return np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))


def split_digits(sizes: dict) -> dict[str, np.ndarray]:
    """Row numbers of sklearn's digits for train, val and test: one permutation with seed 0, so every lab run
    (and every seed) has the same splits."""
    from sklearn.datasets import load_digits

    order = np.random.default_rng(0).permutation(len(load_digits().target))
    test, val = order[:sizes["test"]], order[sizes["test"]:sizes["test"] + sizes["val"]]
    train = order[sizes["test"] + sizes["val"]:][:sizes["train"]]
    return {"train": train, "val": val, "test": test}


def pick_leak(test_rows: np.ndarray, n: int, seed: int) -> list[tuple[int, int]]:
    """(row, kind) of the `n` test images leaked for `seed`, kinds in turn."""
    rows = np.random.default_rng(1000 + seed).choice(test_rows, size=n, replace=False)
    return [(int(r), i % len(KINDS)) for i, r in enumerate(sorted(rows.tolist()))]


def write_folder(root: Path, splits: dict[str, np.ndarray], leak: list[tuple[int, int]] = ()) -> dict[str, str]:
    """An image folder of digits at ROOT (split/<digit>/<row>.png, 8 x 8 greyscale), the leak added to train/ as
    train/<digit>/leak_<row>.png; returns {test id: kind} of the leaked test images (ids as the check names them).

    Written whole or not at all (a temporary sibling, renamed: labs._atomic_folder), with ROOT/done naming what it
    holds; a ROOT whose `done` names the same splits and leak is kept, any other is written again."""
    import hashlib

    from transferlab.labs._atomic_folder import write_atomically

    digits_target = _digit_targets()
    leaked = {f"test/{digits_target[row]}/{row:04d}.png": KINDS[kind] for row, kind in leak}
    content = json.dumps({"splits": {k: [int(r) for r in v] for k, v in splits.items()},
                          "leak": [[int(r), int(k)] for r, k in leak]}, sort_keys=True)
    marker_text = f"digits folder complete: {hashlib.sha256(content.encode()).hexdigest()}\n"

    def write(folder: Path) -> None:
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (N, 8, 8): 0..16 -> 0..255

        def save(array: np.ndarray, relative: str) -> None:
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)  # (H, W) uint8: greyscale

        for split, rows in splits.items():
            for row in rows:
                save(pixels[row], f"{split}/{digits.target[row]}/{row:04d}.png")
        for row, kind in leak:
            save(leaked_copy(pixels[row], kind), f"train/{digits.target[row]}/leak_{row:04d}.png")

    write_atomically(root, "done", marker_text, write, _owned)
    return leaked


def _digit_targets() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


def _owned(parts: tuple[str, ...]) -> bool:
    """A file write_folder makes, by its path in ROOT: split/<digit>/<row>.png or train/<digit>/leak_<row>.png."""
    name = parts[-1]
    stem = name[:-4].removeprefix("leak_") if name.endswith(".png") else ""
    return len(parts) == 3 and parts[0] in ("train", "val", "test") and parts[1].isdigit() and stem.isdigit()

def check_options():
    """The check's CheckOptions, as the command runs it by default: every image method, thresholds calibrated on
    the source (the leaked training split) at CHECK_FPR; no near-copy calibration (the leak is the measurement of
    recall here)."""
    from transferlab.contamination.check import CheckOptions

    return CheckOptions(threshold_mode="data", fpr=CHECK_FPR, calibrate=0, show=8)


def rules(summary: dict) -> str:
    """The check's rule per method, as its summary states them: 'phash distance <= 3, ..., dhash disabled: ...'."""
    return ", ".join(f"{m} {e['match_if']}" for m, e in summary["methods"].items() if m != "exact")


def _current(summary_file: Path) -> bool:
    """A check already in the lab's folder that was made with today's options (a lab folder from before the
    thresholds were calibrated on the data is checked again)."""
    if not summary_file.is_file():
        return False
    chosen = json.loads(summary_file.read_text(encoding="utf-8")).get("thresholds") or {}
    return chosen.get("mode") == "data" and chosen.get("fpr") == CHECK_FPR


def _detect(ctx: LabContext, data: Path, name: str, leaked: dict[str, str]) -> tuple[Path, str]:
    """Run the check (train against test of `data`) into DIR/checks/NAME; save recall and false positives."""
    from transferlab.contamination.check import check_contamination
    from transferlab.contamination.inputs import read_split
    from transferlab.contamination.subsets import read_contamination

    folder = ctx.out / "checks" / name
    if not _current(folder / "summary.json"):
        check_contamination(read_split(data, "train"), read_split(data, "test"), check_options(), folder, str(data),
                            str(data))
    found = read_contamination(folder)
    n_other = len(found.covered) - len(leaked)
    by_kind = {kind: [tid in found.dirty for tid, k in leaked.items() if k == kind] for kind in KINDS}
    measure = {"leaked": len(leaked), "found": sum(t in found.dirty for t in leaked),
               "recall": sum(t in found.dirty for t in leaked) / len(leaked),
               "recall_by_kind": {k: sum(v) / len(v) for k, v in by_kind.items() if v},
               "false_positives": len(found.dirty - set(leaked)),
               "false_positive_rate": len(found.dirty - set(leaked)) / n_other, "n_target": len(found.covered)}
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    measure["thresholds"] = {m: e["threshold"] for m, e in summary["methods"].items() if m != "exact"}
    measure["rules"] = rules(summary)
    return folder, ctx.save_measure(f"detect_{name}", measure)


def _score(ctx: LabContext, run: str, check: Path) -> str:
    from transferlab.contamination.subsets import read_contamination, run_contamination

    split = run_contamination(ctx.run_dir(run), read_contamination(check), split="test")
    return ctx.save_measure(f"score_{run}", split.to_dict())


def run(ctx: LabContext) -> LabResult:
    from transferlab.figures import new_figure

    sizes = _sizes(ctx.quick)
    splits = split_digits(sizes)
    options = {**DIGITS, "epochs": sizes["epochs"], "patience": 0}
    clean_data = ctx.out / "data" / "clean"
    write_folder(clean_data, splits)  # kept when complete (its `done` names these splits)
    rows, detections, rule_notes = [], [], []
    for seed in ctx.seeds:
        leak_data = ctx.out / "data" / f"leak_s{seed}"
        leak = pick_leak(splits["test"], sizes["leak"], seed)
        leaked = write_folder(leak_data, splits, leak)  # kept when complete with this leak
        check, measure = _detect(ctx, leak_data, f"leak_s{seed}", leaked)
        rule_notes.append(f"seed {seed}: {json.loads((ctx.out / measure).read_text(encoding='utf-8'))['rules']}")
        detections.append({"seed": seed, "leaked": ctx.read(measure, "leaked"),
                           "recall": ctx.read(measure, "recall"),
                           **{f"recall {k}": ctx.read(measure, f"recall_by_kind.{k}") for k in KINDS},
                           "false_positives": ctx.read(measure, "false_positives"),
                           "false_positive_rate": ctx.read(measure, "false_positive_rate")})
        for kind, data in (("clean", clean_data), ("leaked", leak_data)):
            name = f"{kind}_s{seed}"
            ctx.finetune(name, run_config(IMAGE_MODEL, str(data), "full", seed, **options))
            score = _score(ctx, name, check)
            rows.append({"training data": kind, "seed": seed,
                         "train images": ctx.read(f"runs/{name}/metrics.json", "data_summary.train"),
                         "test all": ctx.read(score, "all.accuracy"),
                         "test clean": ctx.read(score, "clean.accuracy"), "n clean": ctx.read(score, "clean.n"),
                         "test dirty": ctx.read(score, "dirty.accuracy"), "n dirty": ctx.read(score, "dirty.n")})
            rows[-1]["dirty - clean"] = rows[-1]["test dirty"] - rows[-1]["test clean"]

    def gap(kind, seed):
        return next(r["dirty - clean"] for r in rows if (r["training data"], r["seed"]) == (kind, seed))

    checks = [
        Check("the detector finds the leak", f"recall on the leaked test images minus {RECALL_FLOOR}",
              [d["recall"] - RECALL_FLOOR for d in detections], unit="recall",
              margin=0.01),  # one point of recall, about one leaked image: round-off above the floor is not a find
        Check("few false alarms", f"{FPR_CEILING} minus the share of the not-leaked test images flagged",
              [FPR_CEILING - d["false_positive_rate"] for d in detections], unit="share",
              margin=0.005),  # half a point of the share, one or two images: round-off under the ceiling is not
        Check("the leak inflates the score", "test accuracy dirty minus clean of the leaked run, minus the same of "
              "the clean run", [gap("leaked", s) - gap("clean", s) for s in ctx.seeds], unit="accuracy",
              margin=0.01),  # one accuracy point of inflation
    ]

    fig, axes = new_figure(1, 2, figsize=(10, 4))
    width = 0.35
    for i, kind in enumerate(("clean", "leaked")):
        for j, part in enumerate(("test clean", "test dirty")):
            values = [r[part] for r in rows if r["training data"] == kind]
            axes[0].bar(i + (j - 0.5) * width, sum(values) / len(values), width,
                        color=("tab:blue", "tab:red")[j], label=part if i == 0 else None)
            axes[0].scatter([i + (j - 0.5) * width] * len(values), values, color="black", s=10, zorder=3)
    axes[0].set_xticks([0, 1], ["trained on clean data", "trained with the leak"])
    axes[0].set_ylabel("test accuracy (mean over seeds; dots: seeds)")
    axes[0].set_ylim(min(r["test clean"] for r in rows) - 0.1, 1.01)
    axes[0].set_title("clean and dirty test images (dirty: flagged by the check)")
    axes[0].legend(loc="lower right")
    labels = ["all", *KINDS]
    means = [sum(d["recall"] for d in detections) / len(detections)] + \
        [sum(d[f"recall {k}"] for d in detections) / len(detections) for k in KINDS]
    axes[1].bar(range(len(labels)), means, color="tab:green")
    axes[1].axhline(RECALL_FLOOR, color="grey", linestyle=":", label=f"floor {RECALL_FLOOR}")
    fpr = sum(d["false_positive_rate"] for d in detections) / len(detections)
    axes[1].bar(len(labels), fpr, color="tab:orange")
    axes[1].set_xticks(range(len(labels) + 1), [*labels, "flagged,\nnot leaked"], fontsize=8)
    axes[1].set_ylabel("share of test images flagged (mean over seeds)")
    axes[1].set_title("the detector on the leaked test images")
    axes[1].legend()

    def mean(kind, key):
        values = [r[key] for r in rows if r["training data"] == kind]
        return sum(values) / len(values)

    summary = (f"{sizes['leak']} of {sizes['test']} test images leaked into {sizes['train']} training images "
               f"(mean over seeds): the check flagged {means[0]:.3f} of the leaked images and "
               f"{fpr:.3f} of the others. Run trained with the leak: dirty {mean('leaked', 'test dirty'):.3f}, "
               f"clean {mean('leaked', 'test clean'):.3f} (gap {mean('leaked', 'dirty - clean'):+.3f}); run "
               f"trained on clean data: dirty {mean('clean', 'test dirty'):.3f}, clean "
               f"{mean('clean', 'test clean'):.3f} (gap {mean('clean', 'dirty - clean'):+.3f}).")
    notes = ["the data folders are written under DIR/data from scikit-learn's digits (8 x 8 PNGs); each run's "
             "selected weights (its best validation epoch) are scored on the test split.",
             f"the check's thresholds, calibrated on each leaked training split at a false-positive rate of "
             f"{CHECK_FPR:g} per method (`transferlab contamination`'s default): " + "; ".join(rule_notes) + "."]
    return LabResult(checks, {"scores": rows, "detection": detections}, fig, summary, notes)


LAB = Lab(name="contamination", chapter=120, title="Contamination inflates test scores",
          claim="Test examples that leaked into the training data score higher than the clean ones, and the "
                "near-duplicate check finds them.",
          data="digits (bundled) written as an image folder with a leak of test images, efficientnet_lite0 "
               "(ImageNet) at 64 px", minutes=3, quick_minutes=1.2, run=run,
          reference="Brown et al. 2020 (GPT-3), Appendix C; docs/contamination.md")
