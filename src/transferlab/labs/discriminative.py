"""Lab `discriminative`: discriminative learning rates (Howard and Ruder 2018, "Universal Language Model
Fine-tuning for Text Classification", ACL) keep the early layers close to their pre-trained values and let the
late ones move, and a stronger decay widens that spread.

Claim: with eta_l = eta_0 * decay^(L - l) for depth group l = 0..L (the head at eta_0), fine-tuning changes the
early groups least and the late groups most, and the smaller the decay, the larger the gap between them.

What is run: efficientnet_lite0 (ImageNet weights) fine-tuned on digits (64 px, BatchNorm statistics frozen so
that only the weights move the representations) with `discriminative:decay=a` for a sweep of a, each seed; a = 1.0
is plain fine-tuning with one rate for every group. Per run, `diagnostics.drift.drift_for_run` (as `transferlab
diagnose drift`) measures per backbone depth group the relative weight change ||w - w0|| / ||w0|| and the linear
CKA between the pre-trained and the fine-tuned group outputs on the validation images.

The early groups are the first third of the backbone groups, the late ones the last third (efficientnet_lite0:
stem, blocks.0, blocks.1 and blocks.5, blocks.6, final_conv); a third's value is the mean over its groups.
Checks, per seed (positive supports the claim):
(a) at the strongest decay, late minus early relative weight change;
(b) at the strongest decay, late minus early representation drift 1 - CKA;
(c) log10(late / early weight change) at the strongest decay minus the same at decay 1.0 (the spread widens);
(d) log10(late / early drift) at the strongest decay minus the same at decay 1.0 (a drift <= 0, CKA at or above
    1 within float error, makes the ratio undefined: the value is NaN and the check mixed).
Digits has no test split: validation accuracy is reported for reference only, no number is selected on it.
"""
from __future__ import annotations

import json
import math

from transferlab.labs._runs import DIGITS, IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check


def _settings(quick: bool) -> dict:
    if quick:
        return {"decays": (1.0, 0.5, 0.3), "max_train": 100, "max_val": 200, "epochs": 2}
    return {"decays": (1.0, 0.7, 0.5, 0.3), "max_train": 300, "max_val": 300, "epochs": 4}


def thirds(n: int) -> tuple[list[int], list[int]]:
    """(early, late) group indices of `n` backbone groups: the first and the last n // 3 (at least one each)."""
    k = max(1, n // 3)
    return list(range(k)), list(range(n - k, n))


def third_means(values: list[float]) -> tuple[float, float]:
    """(mean over the early third, mean over the late third) of per-group values."""
    early, late = thirds(len(values))
    return sum(values[i] for i in early) / len(early), sum(values[i] for i in late) / len(late)


def log_ratio(values: list[float]) -> float:
    """log10(late-third mean / early-third mean); NaN when either is not positive (the ratio is undefined)."""
    early, late = third_means(values)
    return math.log10(late / early) if early > 0 and late > 0 else math.nan


def _read_groups(ctx: LabContext, path: str, key: str) -> list[float]:
    count = len(json.loads((ctx.out / path).read_text(encoding="utf-8"))["groups"])
    return [ctx.read(path, f"groups.{i}.{key}") for i in range(count)]


def run(ctx: LabContext) -> LabResult:
    settings = _settings(ctx.quick)
    decays = settings["decays"]
    # Decay 1.0 trains every group at the head's rate. At the demo's 2e-3 that rate wiped out the pre-trained
    # features (both seeds at chance when first measured), which is no baseline to compare decays with; 5e-4 is
    # a rate that full fine-tuning survives.
    options = {**DIGITS, "lr": 5e-4, "max_train": settings["max_train"], "max_val": settings["max_val"],
               "epochs": settings["epochs"], "patience": 0}
    cache: dict = {}  # the pre-trained model's group outputs on the validation images, shared by every run
    change: dict[tuple[float, int], list[float]] = {}  # (decay, seed) -> relative weight change per group
    drift: dict[tuple[float, int], list[float]] = {}  # (decay, seed) -> 1 - CKA per group
    rows, names = [], []
    for decay in decays:
        for seed in ctx.seeds:
            name = f"decay{decay:g}_s{seed}"
            ctx.finetune(name, run_config(IMAGE_MODEL, "digits", f"discriminative:decay={decay:g}", seed, **options))
            path = ctx.save_drift(name, cache)
            names = names or [g["name"] for g in json.loads((ctx.out / path).read_text(encoding="utf-8"))["groups"]]
            change[decay, seed] = _read_groups(ctx, path, "weight_change")
            drift[decay, seed] = [1 - c for c in _read_groups(ctx, path, "cka")]
            rows.append({"decay": decay, "seed": seed, "run": f"runs/{name}",
                         "val_accuracy": ctx.read(f"runs/{name}/metrics.json", "val.accuracy"),
                         "weight_change_early": third_means(change[decay, seed])[0],
                         "weight_change_late": third_means(change[decay, seed])[1],
                         "drift_early": third_means(drift[decay, seed])[0],
                         "drift_late": third_means(drift[decay, seed])[1]})

    strong, plain = min(decays), 1.0
    spread = lambda values: third_means(values)[1] - third_means(values)[0]  # noqa: E731
    checks = [
        Check(f"late weights move more (decay {strong:g})",
              f"relative weight change, late third minus early third of the groups, at decay {strong:g}",
              [spread(change[strong, s]) for s in ctx.seeds], unit="relative L2 change",
              margin=0.0),  # a direction (late over early), no size claimed: any difference beyond noise
        Check(f"late representations move more (decay {strong:g})",
              f"1 - CKA, late third minus early third of the groups, at decay {strong:g}",
              [spread(drift[strong, s]) for s in ctx.seeds], unit="1 - CKA",
              margin=0.0),  # a direction (late over early), no size claimed: any difference beyond noise
        Check("stronger decay widens the weight-change spread",
              f"log10(late / early weight change) at decay {strong:g} minus at decay {plain:g}",
              [log_ratio(change[strong, s]) - log_ratio(change[plain, s]) for s in ctx.seeds], unit="decades",
              margin=0.1),  # a tenth of a decade: the late/early ratio at least 1.26x wider
        Check("stronger decay widens the drift spread",
              f"log10(late / early 1 - CKA) at decay {strong:g} minus at decay {plain:g}",
              [log_ratio(drift[strong, s]) - log_ratio(drift[plain, s]) for s in ctx.seeds], unit="decades",
              margin=0.1),  # a tenth of a decade: the late/early ratio at least 1.26x wider
    ]
    fig = _figure(names, decays, ctx.seeds, change, drift)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731

    def thirds_text(values: dict, decay: float, fmt: str) -> str:
        early = mean([third_means(values[decay, s])[0] for s in ctx.seeds])
        late = mean([third_means(values[decay, s])[1] for s in ctx.seeds])
        return f"{early:{fmt}} (early) and {late:{fmt}} (late)"

    accuracy = ", ".join(f"{mean([r['val_accuracy'] for r in rows if r['decay'] == d]):.3f} at decay {d:g}"
                         for d in decays)
    summary = (f"Validation accuracy after fine-tuning (mean over seeds): {accuracy}. Relative weight change, "
               f"mean over seeds: {thirds_text(change, plain, '.2e')} at decay {plain:g}, "
               f"{thirds_text(change, strong, '.2e')} at decay {strong:g}. Representation drift 1 - CKA: "
               f"{thirds_text(drift, plain, '.2e')} at decay {plain:g}, {thirds_text(drift, strong, '.2e')} at "
               f"decay {strong:g}. The late/early ratio changed by {mean(checks[2].values):+.2f} decades in weights "
               f"and {mean(checks[3].values):+.2f} decades in drift from decay {plain:g} to {strong:g}.")
    notes = [f"Early groups: {', '.join(names[i] for i in thirds(len(names))[0])}; late groups: "
             f"{', '.join(names[i] for i in thirds(len(names))[1])}.",
             "Digits has no test split; CKA is measured on the validation images and validation accuracy is shown "
             "for reference only.",
             f"At decay {plain:g} every group trains at the head's rate (lr {DIGITS['lr']:g}); those runs reached "
             f"{mean([r['val_accuracy'] for r in rows if r['decay'] == plain]):.3f} validation accuracy (chance: "
             f"0.100), so their drift is that of the runs as trained at this rate.",
             f"The early third's 1 - CKA at decay {strong:g} is "
             f"{mean([third_means(drift[strong, s])[0] for s in ctx.seeds]):.1e} (mean over seeds): the drift "
             f"log-ratio rests on values that small."]
    by_group = [{"group": group} | {f"{kind}_decay{d:g}": mean([values[d, s][i] for s in ctx.seeds])
                                     for kind, values in (("weight_change", change), ("drift", drift))
                                     for d in decays}
                for i, group in enumerate(names)]  # means over seeds; the per-seed values are in DIR/measures/
    numbers = {"by_group": by_group, "runs": rows, "settings": {**settings, "decays": list(decays)}}
    return LabResult(checks, numbers, fig, summary, notes)


def _figure(names, decays, seeds, change, drift):
    from transferlab.figures import new_figure

    fig, (left, right) = new_figure(1, 2, figsize=(11, 4))
    for ax, values, ylabel in ((left, change, "||w - w0|| / ||w0||"), (right, drift, "1 - CKA (val)")):
        for decay in decays:
            means = [sum(col) / len(col) for col in zip(*(values[decay, s] for s in seeds))]
            ax.plot(range(len(means)), means, "o-", label=f"decay {decay:g}")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("depth group (input side -> output side)")
        ax.set_ylabel(f"{ylabel}, mean over seeds")
        ax.legend(fontsize=8)
    left.set_yscale("log")  # the rates span decay^L: orders of magnitude between the stem and the last group
    # 1 - CKA of the early groups is ~0 at strong decays and may round to or below 0: symlog shows both
    right.set_yscale("symlog", linthresh=1e-10)
    right.set_ylim(bottom=0)
    left.set_title("Weight change by depth", fontsize=10)
    right.set_title("Representation drift by depth", fontsize=10)
    return fig


LAB = Lab(name="discriminative", chapter=60, title="Discriminative learning rates",
          claim="With discriminative learning rates, fine-tuning moves the early layers least and the late layers "
                "most, and a stronger decay widens that spread.",
          data="digits (bundled), efficientnet_lite0 (ImageNet) at 64 px, BatchNorm statistics frozen",
          minutes=2.5, quick_minutes=1.0, run=run,
          reference="Howard and Ruder 2018, Universal Language Model Fine-tuning for Text Classification (ACL)")
