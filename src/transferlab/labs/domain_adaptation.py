"""Lab `domain-adaptation`: re-normalising or adapting on unlabelled target data under a covariate shift (Li et
al. 2016, AdaBN; Wang et al. 2021, TENT; Ganin et al. 2016, DANN; Jin et al. 2020, MCC). A model trained on clean
inputs loses accuracy on corrupted ones; re-estimating its BatchNorm statistics on the corrupted inputs (AdaBN),
minimising its prediction entropy there (TENT), or training with the corrupted inputs as unlabelled target data
(DANN, MCC) recovers part of the loss, without a single target label.

What runs (digits written as an image folder with train/val/test at 32 px, `test_efficientnet`, random init):
1. the target: every split of the folder under one ImageNet-C corruption at severity 5 (`corrupt_folder`,
   ImageNet-C's parameters, seed 0): gaussian_noise (--quick), gaussian_noise and contrast (full);
2. per seed, the source-only model: `full` on the clean training split (best epoch on the clean validation split);
3. per seed and corruption, the adaptation arms, each scored on the corrupted TEST images (labels read only to
   score them):
   - `adabn`, `tent`: `adapt_run` (what `transferlab adapt --method adabn|tent` runs, default settings) on the
     source-only run with the corrupted VALIDATION images as the unlabelled stream; the adapted run is scored as it
     is saved (eval mode; TENT's BatchNorm weights, statistics re-estimated on the same stream);
   - `mcc` (and `dann`, full): the source-only run's settings and seed, with the corrupted TRAINING images as
     `--target-data` (unlabelled); the epoch is chosen on the clean validation split, as for source-only.
No setting is chosen on any target image's label; the test images are never adapted on.

Checks: (a) per corruption, the shift costs accuracy: source-only's clean minus corrupted test accuracy; (b) per
corruption and arm, the arm recovers part of it: its corrupted test accuracy minus source-only's. Every check is
paired on the same test images (the clean and corrupted folders hold the same files) and decided over seeds and
examples (`stats.paired_runs`); the arm checks of one corruption are one family, their p-values Holm-adjusted
(`stats.holm`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace

from transferlab.labs._runs import run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

MODEL, SIZE = "test_efficientnet", 32
SEVERITY, PARAMS = 5, "imagenet"  # ImageNet-C's strongest level and constants (the batchnorm lab's choice)
TTA = ("adabn", "tent")  # test-time arms: `transferlab adapt --method ...` on the source-only run
MARGIN = 0.01  # one accuracy point: a smaller cost or recovery is not one worth the name


def setting(quick: bool) -> dict:
    """What runs: the corruptions, the UDA strategies and the training options."""
    return {"kinds": ("gaussian_noise",) if quick else ("gaussian_noise", "contrast"),
            "uda": ("mcc",) if quick else ("mcc", "dann"),
            "options": {"image_size": SIZE, "epochs": 4 if quick else 8, "lr": 3e-3, "batch_size": 32,
                        "device": "cpu"}}


@dataclass
class FamilyCheck(Check):
    """A Check decided with its p-value Holm-adjusted over the family of checks it was made in (stats.holm): the
    comparison's own interval, the adjusted p for "beyond noise"."""

    p_adjusted: float | None = None
    family: int = 1

    def comparison(self):
        c = super().comparison()
        return c if self.p_adjusted is None else replace(c, p_adjusted=self.p_adjusted, family=self.family)


def holm_family(checks: list[Check]) -> list[FamilyCheck]:
    """The checks as one family: each decided with its Holm-adjusted p-value."""
    from transferlab.stats import holm

    adjusted = holm([c.comparison() for c in checks])
    return [FamilyCheck(**{f.name: getattr(c, f.name) for f in fields(Check)}, p_adjusted=a.p_adjusted,
                        family=a.family) for c, a in zip(checks, adjusted)]


def lab_checks(clean: dict, shifted: dict, kinds, arms, seeds) -> list[Check]:
    """The lab's checks from per-example test correctness (0/1 lists over the same test images, one order):
    `clean[seed]` source-only on clean images, `shifted[(arm, kind, seed)]` each arm (and "source") on the
    corrupted ones."""
    def accuracy(x):
        return sum(x) / len(x)

    checks: list[Check] = []
    for kind in kinds:
        source = [shifted[("source", kind, s)] for s in seeds]
        checks.append(Check(
            f"the shift costs accuracy ({kind})", f"source-only TEST accuracy on clean digits minus on {kind} "
            f"severity {SEVERITY}, same images", [accuracy(clean[s]) - accuracy(x) for s, x in zip(seeds, source)],
            unit="accuracy", margin=MARGIN, paired=([clean[s] for s in seeds], source)))
        family = []
        for arm in arms:
            runs = [shifted[(arm, kind, s)] for s in seeds]
            family.append(Check(
                f"{arm} recovers part of it ({kind})", f"{arm} minus source-only TEST accuracy on {kind} severity "
                f"{SEVERITY}, same images (Holm over the {len(arms)} arms)",
                [accuracy(a) - accuracy(b) for a, b in zip(runs, source)], unit="accuracy", margin=MARGIN,
                paired=(runs, source)))
        checks += holm_family(family)
    return checks


def _shifted(ctx: LabContext, folder: str, kind: str) -> str:
    from transferlab.diagnostics.corrupt import corrupt_folder

    out = ctx.out / "data" / f"{kind}_{SEVERITY}"
    done = out.parent / f"{out.name}.json"
    if not done.is_file():
        result = corrupt_folder(folder, out, kind, SEVERITY, seed=0, params=PARAMS)
        done.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return str(out)


def _score(ctx: LabContext, name: str, run_dir, data_path: str, extra: dict | None = None) -> str:
    """Per-example correctness of the run on the TEST split of `data_path` (folder order), saved as a measure."""
    import torch

    from transferlab.runs import load_run
    from transferlab.training.evaluate import evaluate, ordered_loader

    _, data, model, _ = load_run(run_dir, data_path)
    correct: list = []
    result = evaluate(model, ordered_loader(data.test, 64, data.collate), "cpu", correct=correct)
    flags = [int(x) for x in torch.cat(correct).tolist()]
    files = [os.path.relpath(p, data_path) for p in data.test.paths]
    if len(flags) != len(files):
        raise RuntimeError(f"{data_path}: {len(files) - len(flags)} test images could not be read; the arms would "
                           f"not be scored on the same images")
    return ctx.save_measure(name, {"run": str(run_dir), "data": data_path, "split": "test",
                                   "accuracy": result["accuracy"], "n": result["n"], "files": files,
                                   "correct": flags, **(extra or {})})


def _adapted(ctx: LabContext, source: str, data_path: str, method: str, seed: int):
    """The source-only run adapted by `method` on the corrupted VALIDATION images (kept when done before)."""
    from transferlab.diagnostics.tta import adapt_run

    out = ctx.out / "adapted" / f"{method}_{os.path.basename(data_path)}_s{seed}"
    if not (out / "adapt.json").is_file():
        adapt_run(ctx.run_dir(source), data_path, out, method=method, split="val", overwrite=True, seed=seed)
    return out


def run(ctx: LabContext) -> LabResult:
    from transferlab.labs._digits_folder import write_digits_folder

    plan = setting(ctx.quick)
    kinds, uda, options = plan["kinds"], plan["uda"], plan["options"]
    arms = (*TTA, *uda)
    folder = str(write_digits_folder(ctx.out / "data" / "digits", size=SIZE))
    targets = {kind: _shifted(ctx, folder, kind) for kind in kinds}
    clean, shifted, rows, files = {}, {}, [], None

    def scored(name, run_dir, data_path, row, extra=None):
        nonlocal files
        path = _score(ctx, name, run_dir, data_path, extra)
        measure = json.loads((ctx.out / path).read_text(encoding="utf-8"))
        if files is not None and measure["files"] != files:
            raise RuntimeError(f"{path}: scored on other test images than the clean ones")
        files = measure["files"]
        rows.append({**row, "test_accuracy": ctx.read(path, "accuracy"), "test_examples": ctx.read(path, "n")})
        return measure["correct"]

    for seed in ctx.seeds:
        source = f"source_s{seed}"
        ctx.finetune(source, run_config(MODEL, folder, "full", seed, **options))
        base = {"seed": seed, "source_val_accuracy": ctx.read(f"runs/{source}/metrics.json", "val.accuracy")}
        clean[seed] = scored(f"{source}_clean", ctx.run_dir(source), folder,
                             {"arm": "source", "target": "clean", **base})
        for kind, target in targets.items():
            shifted[("source", kind, seed)] = scored(f"{source}_{kind}", ctx.run_dir(source), target,
                                                     {"arm": "source", "target": kind, **base})
            for method in TTA:
                adapted = _adapted(ctx, source, target, method, seed)
                shifted[(method, kind, seed)] = scored(f"{method}_{kind}_s{seed}", adapted, target,
                                                       {"arm": method, "target": kind, **base},
                                                       {"adapted_on": "val", "adapted_run": str(adapted)})
            for strategy in uda:
                name = f"{strategy}_{kind}_s{seed}"
                config = run_config(MODEL, folder, strategy, seed, **options)
                config.strategy_options = {"target_data": target}
                ctx.finetune(name, config)
                shifted[(strategy, kind, seed)] = scored(
                    name, ctx.run_dir(name), target,
                    {"arm": strategy, "target": kind, "seed": seed,
                     "source_val_accuracy": ctx.read(f"runs/{name}/metrics.json", "val.accuracy")})

    checks = lab_checks(clean, shifted, kinds, arms, ctx.seeds)
    return LabResult(checks, {"runs": rows, "settings": {"severity": SEVERITY, "params": PARAMS,
                                                         "model": MODEL, "image_size": SIZE,
                                                         "epochs": options["epochs"]}},
                     _figure(rows, kinds, arms), _summary(rows, kinds, arms, len(ctx.seeds)), _notes(uda))


def _mean(rows, arm, target) -> float:
    values = [r["test_accuracy"] for r in rows if (r["arm"], r["target"]) == (arm, target)]
    return sum(values) / len(values)


def _figure(rows, kinds, arms):
    from transferlab.figures import new_figure

    fig, axes = new_figure(1, len(kinds), figsize=(5 * len(kinds), 4))
    axes = axes if len(kinds) > 1 else [axes]
    labels = ["clean", "source", *arms]
    for ax, kind in zip(axes, kinds):
        for x, label in enumerate(labels):
            arm, target = ("source", "clean") if label == "clean" else (label, kind)
            values = [r["test_accuracy"] for r in rows if (r["arm"], r["target"]) == (arm, target)]
            ax.bar(x, sum(values) / len(values), 0.6, color="grey" if label == "clean" else None)
            ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(labels)), ["source\n(clean)", "source", *arms])
        ax.set_ylim(0, 1)
        ax.set_ylabel("TEST accuracy (bars: mean; dots: seeds)")
        ax.set_title(f"digits, {kind} severity {SEVERITY}")
    return fig


def _summary(rows, kinds, arms, seeds: int) -> str:
    parts = []
    for kind in kinds:
        source = _mean(rows, "source", kind)
        gains = ", ".join(f"{arm} {_mean(rows, arm, kind):.3f} ({_mean(rows, arm, kind) - source:+.3f})"
                          for arm in arms)
        parts.append(f"{kind} severity {SEVERITY}: source-only {source:.3f}; {gains}")
    return (f"TEST accuracy on the digits test images, mean over {seeds} seeds: source-only on clean images "
            f"{_mean(rows, 'source', 'clean'):.3f}. Under " + "; under ".join(parts)
            + " (in brackets: minus source-only). Chance is 0.1.")


def _notes(uda) -> list[str]:
    return ["every accuracy is on the digits folder's test split, the same images clean and corrupted; the "
            "epoch of every trained run was chosen on the clean validation split; no target label was read "
            "except to score.",
            "adabn and tent adapt on the corrupted validation images (unlabelled, `adapt_run` with its default "
            "settings: TENT offline, one pass, Adam lr 1e-3) and are scored as saved, in eval mode; "
            f"{' and '.join(uda)} train{'s' if len(uda) == 1 else ''} with the corrupted training images as "
            "--target-data.",
            "the checks are paired on the test images and decided over seeds and examples (stats.paired_runs); the "
            "arms of one corruption are one family, Holm-adjusted (stats.holm)."]


LAB = Lab(name="domain-adaptation", chapter=95, title="Adapting to a covariate shift without target labels",
          claim="Re-normalising or adapting on unlabelled target data (AdaBN, TENT, MCC, DANN) recovers part of "
                "the accuracy that a covariate shift costs.",
          data="digits written as an image folder (train/val/test) at 32 px, corrupted by ImageNet-C's "
               "gaussian_noise (and contrast, full) at severity 5, test_efficientnet (random init)",
          minutes=4.5, quick_minutes=0.75, run=run,
          reference="Li et al. 2016 (AdaBN); Wang et al. 2021, Tent: fully test-time adaptation by entropy "
                    "minimization (ICLR); Ganin et al. 2016 (DANN, JMLR); Jin et al. 2020 (MCC, ECCV)")
