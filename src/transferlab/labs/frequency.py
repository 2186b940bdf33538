"""Lab `frequency`: early layers are frequency filters, and what they filter out later layers cannot get back
(Yosinski et al. 2014 on generic early features; Zeiler & Fergus 2014 on first-layer filters; the project's
frequency issue, docs/frequency.md).

The target's label is carried only by a faint grating on hymenoptera's photographs (labs/frequency_data.py):
`high` at 1/3 cycles per pixel, `low` at 1/32 (the control). Two models: efficientnet_lite0 as pre-trained, and the
same weights with a low-pass stem (every 3x3 stem kernel replaced by its mean: zero response at 1/3, 0.987 at
1/32). A linear probe (and, in the full version, `freeze:k=3` and `full`) is trained on each target. Checks, per
seed: (a) on the high target, the pre-trained stem's test accuracy minus the low-pass stem's (positive: the
frequency the stem discards is lost for good; margin 0.05); (b) on the low target, the low-pass stem's test accuracy
minus the pre-trained one's, a non-inferiority claim with margin 0.05 (the low-pass stem loses at most 5 points where
its filter passes the label: the 90% interval lies above -0.05).
"""
from __future__ import annotations

from transferlab.labs._runs import run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.frequency_data import MODEL, build_data, write_weights
from transferlab.labs.verdict import Check

MARGIN = 0.05


def run(ctx: LabContext) -> LabResult:
    from pathlib import Path

    from transferlab.figures import new_figure

    size, amplitude, max_images = (64, 16 / 255, 200) if ctx.quick else (128, 8 / 255, None)
    strategies = ["linear_probe"] if ctx.quick else ["linear_probe", "freeze:k=3", "full"]
    build_data(ctx.out, size, amplitude, max_images, Path(ctx.dataset("hymenoptera")))
    weights = write_weights(ctx.out)
    rows = []
    for target in ("high", "low"):
        for model in ("pretrained", "lowpass"):
            for strategy in strategies:
                for seed in ctx.seeds:
                    name = f"{target}_{model}_{strategy.replace(':', '-').replace('=', '')}_s{seed}"
                    config = run_config(MODEL, str(ctx.out / "data" / target), strategy, seed,
                                        weights=str(weights["original" if model == "pretrained" else "lowpass"]),
                                        image_size=size, epochs=5, batch_size=32)
                    ctx.finetune(name, config)
                    rows.append({"target": target, "stem": model, "strategy": strategy, "seed": seed,
                                 "test_accuracy": ctx.read(f"runs/{name}/metrics.json", "test.accuracy")})

    def acc(target, model, strategy, seed):
        return next(r["test_accuracy"] for r in rows
                    if (r["target"], r["stem"], r["strategy"], r["seed"]) == (target, model, strategy, seed))

    checks = []
    for strategy in strategies:
        checks.append(Check(f"high frequency lost by the low-pass stem ({strategy})",
                            "high target test accuracy, pre-trained stem minus low-pass stem",
                            [acc("high", "pretrained", strategy, s) - acc("high", "lowpass", strategy, s)
                             for s in ctx.seeds],
                            margin=MARGIN))  # the lab's line between a real change and a small one
        checks.append(Check(f"low frequency kept ({strategy})",
                            "low target test accuracy, low-pass stem minus pre-trained stem",
                            [acc("low", "lowpass", strategy, s) - acc("low", "pretrained", strategy, s)
                             for s in ctx.seeds],
                            kind="noninferiority", margin=MARGIN))  # "not hurt": no more than MARGIN lower
    fig, axes = new_figure(1, 2, figsize=(10, 4), sharey=True)
    for target, ax in zip(("high", "low"), axes):
        for i, model in enumerate(("pretrained", "lowpass")):
            means = [sum(acc(target, model, st, s) for s in ctx.seeds) / len(ctx.seeds) for st in strategies]
            ax.bar([j + 0.4 * i for j in range(len(strategies))], means, width=0.4, label=f"{model} stem")
        ax.axhline(0.5, ls=":", color="grey")
        ax.set_xticks([j + 0.2 for j in range(len(strategies))], strategies)
        ax.set_title(f"label at {'1/3' if target == 'high' else '1/32'} cycles/px")
        ax.set_ylabel("test accuracy (mean over seeds; chance 0.5)")
        ax.legend()
    high = checks[0].values
    low = checks[1].values
    summary = (f"With a linear probe, the label at 1/3 cycles/px was read {sum(high) / len(high):+.3f} better (test "
               f"accuracy) through the pre-trained stem than through the low-pass one; on the 1/32 control the "
               f"low-pass stem scored {sum(low) / len(low):+.3f} against the pre-trained one (means over seeds). "
               f"Images {size} px, grating amplitude {amplitude * 255:.0f}/255.")
    return LabResult(checks, {"runs": rows, "image_size": size, "amplitude": amplitude}, fig, summary)


LAB = Lab(name="frequency", chapter=20, title="Early layers as frequency filters",
          claim="What the early layers filter out (here: a 1/3 cycles/px grating a low-pass stem removes) cannot be "
                "recovered by training the later ones; a label the filter passes is not hurt.",
          data="hymenoptera photographs carrying a faint grating label (written by the lab), efficientnet_lite0",
          minutes=10, quick_minutes=1.5, run=run, reference="Yosinski et al. 2014; Zeiler & Fergus 2014",
          datasets=("hymenoptera",))
