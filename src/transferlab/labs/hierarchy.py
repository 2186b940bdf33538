"""Lab `hierarchy`: early layers are generic, late layers specific (Yosinski et al. 2014, "How transferable are
features in deep neural networks?", NeurIPS).

Claim: the features of a pre-trained network go from general (useful for any image task) at the input side to
specific to the source task at the output side, so (i) fine-tuning changes the late layers most, and (ii) the
late layers lose more of their usefulness when the target is far from the source than when it is close.

What is run (efficientnet_lite0 with its ImageNet weights; 9 backbone depth groups, stem .. final_conv):
- Linear probes of the PRE-TRAINED model per depth group (`diagnostics.probe.probe_model`: each group's
  mean-pooled output, standardised, a logistic regression fit on train, scored on val) on a NEAR target
  (hymenoptera: ants vs bees, natural photographs like ImageNet's) and a DISTANT one (digits: 8x8 greyscale
  scans upscaled to 64 px). One probe per probe seed: the seed draws the probe's training subset (and, for
  digits, its validation split), so the spread over seeds is that of the probe's data.
- Fine-tuning (`full`, BatchNorm statistics frozen, so that only the weights move) on each target, per seed, then
  CKA between the pre-trained and the fine-tuned model per depth group on the target's validation images
  (`diagnostics.drift.drift_for_run`, as `transferlab diagnose drift` computes it).

Checks (positive supports the claim):
(a, b) drift grows with depth, on the distant and on the near target: per seed, the Spearman correlation between
    the depth-group index and the representation drift 1 - CKA of the fine-tuned model (backbone groups);
(c) late groups are more specific: per probe seed, the probe's validation-accuracy drop from its best group to
    the last group on the distant target minus the same drop on the near target.
Neither data set has a test split: every accuracy here is on the validation split. The "best group" is the
maximum over groups of the same validation accuracies, so both drops are measured the same way.
"""
from __future__ import annotations

from transferlab.labs._runs import DIGITS, IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

NEAR_IMAGE_SIZE = 96  # photographs lose their content at 64 px; digits are 8x8 scans, 64 px is the demo's size
TARGETS = ("distant", "near")


def _settings(quick: bool) -> dict:
    """Sizes: probe training examples, fine-tuning examples, validation examples and epochs."""
    if quick:
        return {"probe_train": 100, "max_train": 100, "max_val": 200, "epochs": 2}
    return {"probe_train": 200, "max_train": 240, "max_val": 300, "epochs": 4}


def _data(ctx: LabContext, target: str) -> tuple[str, dict]:
    """(data spec, options) of a target: digits at the demo's settings, hymenoptera at NEAR_IMAGE_SIZE."""
    if target == "distant":
        return "digits", dict(DIGITS)
    return ctx.dataset("hymenoptera"), {**DIGITS, "image_size": NEAR_IMAGE_SIZE}


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman rank correlation of two equal-length sequences (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def accuracy_drop(accuracies: list[float]) -> float:
    """Best accuracy over the depth groups minus the last group's: how much the output side lost."""
    return max(accuracies) - accuracies[-1]


def _probe(ctx: LabContext, target: str, seed: int, settings: dict) -> str:
    """Probe the pre-trained model on `target` with the probe seed's training subset; the measure's path."""
    from transferlab.data import DataOptions
    from transferlab.diagnostics.probe import majority_baseline, probe_model
    from transferlab.runs import RunConfig, prepare
    from transferlab.training.trainer import resolve_device

    data, options = _data(ctx, target)
    # a linear_probe config builds the pre-trained backbone, as `transferlab diagnose probe --model` does; the
    # data seed draws the probe's training subset (digits: also its validation split)
    config = RunConfig(model=IMAGE_MODEL, data=data, strategy="linear_probe",
                       data_options=DataOptions(image_size=options["image_size"], max_train=settings["probe_train"],
                                                max_val=settings["max_val"], seed=seed))
    bundle, model, _ = prepare(config)
    entry, features = probe_model(model, bundle, resolve_device("auto"), max_train=settings["probe_train"])
    return ctx.save_measure(f"probe_{target}_p{seed}", {
        "model": IMAGE_MODEL, "data": data, "probe_seed": seed, "split": "val",
        "examples": {s: int(len(y)) for s, (_, y) in features.items()},
        "majority_baseline": majority_baseline(features),
        "groups": [{"name": g.name, "index": g.index, "dim": g.dim, "train_accuracy": g.train_accuracy,
                    "val_accuracy": g.val_accuracy} for g in entry.groups]})


def _drift(ctx: LabContext, target: str, seed: int, settings: dict, cache: dict) -> tuple[str, dict]:
    """Fine-tune on `target` and measure CKA per depth group against the pre-trained model; (measure path,
    run name)."""
    data, options = _data(ctx, target)
    name = f"{target}_full_s{seed}"
    ctx.finetune(name, run_config(IMAGE_MODEL, data, "full", seed, max_train=settings["max_train"],
                                  max_val=settings["max_val"], epochs=settings["epochs"], patience=0, **options))
    path = ctx.save_drift(name, cache)
    return path, name


def run(ctx: LabContext) -> LabResult:
    settings = _settings(ctx.quick)
    probes: dict[str, dict[int, list[float]]] = {t: {} for t in TARGETS}  # target -> probe seed -> val acc per group
    drifts: dict[str, dict[int, list[float]]] = {t: {} for t in TARGETS}  # target -> seed -> 1 - CKA per group
    changes: dict[str, dict[int, list[float]]] = {t: {} for t in TARGETS}  # target -> seed -> weight change
    names: list[str] = []
    rows = []
    for target in TARGETS:
        for seed in ctx.seeds:
            path = _probe(ctx, target, seed, settings)
            probes[target][seed] = _read_groups(ctx, path, "val_accuracy")
            names = names or [g["name"] for g in _groups(ctx, path)]
    cache: dict = {}  # the pre-trained model's group outputs, shared by the runs of one target
    for target in TARGETS:
        for seed in ctx.seeds:
            path, run = _drift(ctx, target, seed, settings, cache)
            drifts[target][seed] = [1 - c for c in _read_groups(ctx, path, "cka")]
            changes[target][seed] = _read_groups(ctx, path, "weight_change")
            rows.append({"target": target, "seed": seed, "run": f"runs/{run}",
                         "val_accuracy": ctx.read(f"runs/{run}/metrics.json", "val.accuracy"),
                         "drift_spearman": spearman(range(len(drifts[target][seed])), drifts[target][seed]),
                         "first_group_drift": drifts[target][seed][0], "last_group_drift": drifts[target][seed][-1]})

    trend = {t: [r["drift_spearman"] for r in rows if r["target"] == t] for t in TARGETS}
    drops = {t: [accuracy_drop(probes[t][s]) for s in ctx.seeds] for t in TARGETS}
    checks = [
        Check("drift grows with depth (distant target)",
              "Spearman correlation of depth-group index with 1 - CKA after fine-tuning on digits",
              trend["distant"], unit="rho", margin=0.5),  # a strong monotone trend, not merely a positive one
        Check("drift grows with depth (near target)",
              "Spearman correlation of depth-group index with 1 - CKA after fine-tuning on hymenoptera",
              trend["near"], unit="rho", margin=0.5),  # a strong monotone trend, not merely a positive one
        Check("late groups are more specific",
              "probe val-accuracy drop from the best group to the last group, digits minus hymenoptera",
              [d - n for d, n in zip(drops["distant"], drops["near"])], unit="accuracy", per="probe seed",
              margin=0.01),  # one point of probe accuracy
    ]
    figure = _figure(names, probes, drifts)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    last = {t: mean([p[-1] for p in probes[t].values()]) for t in TARGETS}
    best = {t: mean([max(p) for p in probes[t].values()]) for t in TARGETS}
    summary = (f"After fine-tuning, 1 - CKA rose with depth with a Spearman correlation of "
               f"{mean(trend['distant']):+.2f} on digits and {mean(trend['near']):+.2f} on hymenoptera (mean over "
               f"seeds); the last backbone group's 1 - CKA was "
               f"{mean([d[-1] for d in drifts['distant'].values()]):.3f} and "
               f"{mean([d[-1] for d in drifts['near'].values()]):.3f}, the stem's "
               f"{mean([d[0] for d in drifts['distant'].values()]):.1e} and "
               f"{mean([d[0] for d in drifts['near'].values()]):.1e}. Probing the pre-trained model, the best group "
               f"reached {best['distant']:.3f} val accuracy on digits and the last {last['distant']:.3f} (a drop of "
               f"{mean(drops['distant']):.3f}); on hymenoptera {best['near']:.3f} and {last['near']:.3f} (a drop of "
               f"{mean(drops['near']):.3f}).")
    numbers = {"by_group": _group_table(names, probes, drifts, changes), "runs": rows,
               "probes": [{"target": t, "probe_seed": s, "best_val_accuracy": max(probes[t][s]),
                           "last_val_accuracy": probes[t][s][-1], "drop": accuracy_drop(probes[t][s])}
                          for t in TARGETS for s in ctx.seeds],
               "settings": settings}
    notes = ["Neither digits nor hymenoptera has a test split here: every accuracy is on the validation split.",
             "The probe's best group is the maximum of the same validation accuracies the drop is measured on "
             "(an upward-biased maximum, the same way on both targets).",
             f"Digits at {DIGITS['image_size']} px, hymenoptera at {NEAR_IMAGE_SIZE} px; chance is 0.1 on digits "
             f"and 0.5 on hymenoptera, so the drops are in absolute accuracy."]
    return LabResult(checks, numbers, figure, summary, notes)


def _groups(ctx: LabContext, path: str) -> list[dict]:
    import json

    return json.loads((ctx.out / path).read_text(encoding="utf-8"))["groups"]


def _read_groups(ctx: LabContext, path: str, key: str) -> list[float]:
    """A measure's per-group values at `key`, read back (and recorded) one by one."""
    return [ctx.read(path, f"groups.{i}.{key}") for i in range(len(_groups(ctx, path)))]


def _mean_by_group(per_seed: dict[int, list[float]]) -> list[float]:
    return [sum(col) / len(col) for col in zip(*per_seed.values())]


def _group_table(names: list[str], probes: dict, drifts: dict, changes: dict) -> list[dict]:
    """One row per depth group: the means over seeds of each measurement (the per-seed values are in
    DIR/measures/)."""
    columns = {f"probe_val_{t}": _mean_by_group(probes[t]) for t in TARGETS}
    columns |= {f"drift_{t}": _mean_by_group(drifts[t]) for t in TARGETS}
    columns |= {f"weight_change_{t}": _mean_by_group(changes[t]) for t in TARGETS}
    return [{"group": name} | {key: values[i] for key, values in columns.items()} for i, name in enumerate(names)]


def _figure(names: list[str], probes: dict, drifts: dict):
    from transferlab.figures import new_figure

    labels = {"distant": "digits (distant)", "near": "hymenoptera (near)"}
    fig, (left, right) = new_figure(1, 2, figsize=(11, 4))
    for ax, values, ylabel, title in (
            (left, probes, "probe accuracy (val)", "Pre-trained model: linear probe per depth group"),
            (right, drifts, "1 - CKA (val)", "Drift after fine-tuning (full)")):
        for target, color in zip(TARGETS, ("tab:red", "tab:blue")):
            per_seed = list(values[target].values())
            for v in per_seed:
                ax.plot(range(len(v)), v, color=color, alpha=0.3, lw=0.8)
            means = _mean_by_group(values[target])
            ax.plot(range(len(means)), means, "o-", color=color, label=f"{labels[target]}, mean")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("depth group (input side -> output side)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return fig


LAB = Lab(name="hierarchy", chapter=10, title="Generic early layers, specific late layers",
          claim="Early layers of a pre-trained network are generic and late layers specific: fine-tuning moves the "
                "late layers most, and the late layers lose more of their usefulness on a distant target than on "
                "a near one.",
          data="efficientnet_lite0 (ImageNet); hymenoptera (near, 96 px) and digits (distant, 64 px)",
          minutes=2, quick_minutes=1.2, run=run, datasets=("hymenoptera",),
          reference="Yosinski et al. 2014, How transferable are features in deep neural networks? (NeurIPS)")
