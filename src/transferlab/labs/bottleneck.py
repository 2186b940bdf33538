"""Lab `bottleneck`: fine-tuning as selection from the pre-trained representation; the selective penalty
`ib_select` holds what the target does not need, so less of the source task is forgotten, at little target cost.

Claim (the information-bottleneck view of transfer, Tishby & Zaslavsky 2015; the selective penalty of
docs/bottleneck.md): pre-training compresses the input into a representation, fine-tuning selects from it what
predicts the target's labels; penalising the movement of the dimensions the target does not need (low correlation
ratio with the target label) keeps them close to the pre-trained model, so the source task is forgotten less,
while the target accuracy stays within a small margin of plain fine-tuning.

What is run (the sequential set-up of benchmarks/forgetting_digits.py, small enough for a CPU): a source model,
`test_efficientnet` (tiny timm, random init) trained on digits 0-4 at 32 px (one run, seed 0), exported with its
head as the source weights (`export_source_weights`); then per seed `full` and `ib_select` (lam 1, the pooled
features) fine-tuned on digits 5-9 from those weights. docs/bottleneck.md measured the same comparison with a
CIFAR source model (resnet10_cifar, 5 classes -> the other 5), which takes an hour to pre-train.

Checks:
- "ib_select forgets less": forgetting of full minus forgetting of ib_select, per seed. Forgetting
  (diagnostics/forgetting.py) = the source head's accuracy on the held-out source images (the digits 0-4
  validation split) with the pre-trained backbone minus with the fine-tuned backbone.
- "target cost within 2 points": target validation accuracy of ib_select minus full's, per seed, a
  non-inferiority claim with margin 0.02 (supported when the 90% interval lies above -0.02),
  for the selected weights (the ones forgetting is measured on; digits has no test split, so selection and
  reporting share the validation split for both strategies alike).
"""
from __future__ import annotations

from transferlab.labs._runs import run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

MODEL = "test_efficientnet"
SOURCE, TARGET = "digits:0-4", "digits:5-9"
STRATEGIES = ("full", "ib_select")
MARGIN = 0.02


def _settings(quick: bool) -> dict:
    # forgetting_digits.py's settings (32 px, lr 3e-3); the full version trains longer on the target
    return {"image_size": 32, "lr": 3e-3, "batch_size": 32, "epochs": 3 if quick else 6, "patience": 0}


def _forgetting(ctx: LabContext, name: str) -> str:
    from transferlab.diagnostics.forgetting import forgetting_for_run

    result = forgetting_for_run(ctx.run_dir(name), source_data=SOURCE)
    return ctx.save_measure(f"forgetting_{name}", result.to_dict())


def run(ctx: LabContext) -> LabResult:
    from transferlab.diagnostics.source import export_source_weights
    from transferlab.figures import new_figure

    options = _settings(ctx.quick)
    ctx.finetune("source_0-4", run_config(MODEL, SOURCE, "full", 0, **{**options, "epochs": 3}))
    weights = ctx.out / "source_0-4.safetensors"
    if not weights.is_file():
        export_source_weights(ctx.run_dir("source_0-4"), weights)
    source_val = ctx.read("runs/source_0-4/metrics.json", "val.accuracy")
    rows = []
    for seed in ctx.seeds:
        for strategy in STRATEGIES:
            name = f"{strategy}_s{seed}"
            ctx.finetune(name, run_config(MODEL, TARGET, strategy, seed, weights=str(weights), **options))
            measure = _forgetting(ctx, name)
            rows.append({"strategy": strategy, "seed": seed,
                         "target_val_accuracy": ctx.read(f"runs/{name}/metrics.json", "val.accuracy"),
                         "best_epoch": ctx.read(f"runs/{name}/metrics.json", "best_epoch"),
                         "source_accuracy_before": ctx.read(measure, "accuracy_before"),
                         "source_accuracy_after": ctx.read(measure, "accuracy_after"),
                         "forgetting": ctx.read(measure, "forgetting"),
                         "source_examples": ctx.read(measure, "examples")})

    def at(strategy, seed, key):
        return next(r[key] for r in rows if (r["strategy"], r["seed"]) == (strategy, seed))

    checks = [
        Check("ib_select forgets less", "forgetting of the source task (digits 0-4) under full minus under "
              "ib_select", [at("full", s, "forgetting") - at("ib_select", s, "forgetting") for s in ctx.seeds],
              unit="source accuracy", margin=0.01),  # one point of source accuracy kept
        Check(f"target cost within {MARGIN * 100:g} points", "target val accuracy (digits 5-9) of ib_select minus "
              "full's", [at("ib_select", s, "target_val_accuracy") - at("full", s, "target_val_accuracy")
                         for s in ctx.seeds],
              unit="accuracy", kind="noninferiority", margin=MARGIN),  # the claim's own "within 2 points"
    ]

    fig, axes = new_figure(1, 2, figsize=(10, 4))
    for i, strategy in enumerate(STRATEGIES):
        for ax, key in zip(axes, ("source_accuracy_after", "target_val_accuracy")):
            values = [at(strategy, s, key) for s in ctx.seeds]
            ax.scatter([i] * len(values), values, label=strategy)
    axes[0].axhline(rows[0]["source_accuracy_before"], color="grey", linestyle=":", label="before fine-tuning")
    axes[0].set_ylabel("source accuracy (digits 0-4, held-out)")
    axes[0].set_title("what the source task keeps")
    axes[1].set_ylabel("target val accuracy (digits 5-9)")
    axes[1].set_title("what the target gets")
    for ax in axes:
        ax.set_xticks(range(len(STRATEGIES)), STRATEGIES)
        ax.set_xlim(-0.5, len(STRATEGIES) - 0.5)
        ax.legend()

    def mean(strategy, key):
        return sum(at(strategy, s, key) for s in ctx.seeds) / len(ctx.seeds)

    summary = (f"Source model: {source_val:.3f} validation accuracy on digits 0-4. Fine-tuned on digits 5-9 "
               f"({options['epochs']} epochs, mean over seeds), full forgot {mean('full', 'forgetting'):+.3f} of the "
               f"source accuracy ({rows[0]['source_accuracy_before']:.3f} -> "
               f"{mean('full', 'source_accuracy_after'):.3f}) and ib_select {mean('ib_select', 'forgetting'):+.3f} "
               f"(-> {mean('ib_select', 'source_accuracy_after'):.3f}); target validation accuracy "
               f"{mean('full', 'target_val_accuracy'):.3f} (full) and {mean('ib_select', 'target_val_accuracy'):.3f} "
               f"(ib_select).")
    notes = ["digits has no test split: target accuracy is that of the selected weights on the validation split, "
             "for both strategies; the source accuracies are on the held-out digits 0-4 validation images."]
    return LabResult(checks, {"runs": rows, "source_val_accuracy": source_val}, fig, summary, notes)


LAB = Lab(name="bottleneck", chapter=110, title="Fine-tuning as selection: the selective penalty",
          claim="Fine-tuning selects what the target needs; the selective penalty ib_select keeps what the target "
                "does not need close to the pre-trained model, so the source task is forgotten less, at a target "
                "cost within 2 points.",
          data="digits 0-4 (source) -> digits 5-9 (target), test_efficientnet (random init, pre-trained on the "
               "source here) at 32 px", minutes=1, quick_minutes=0.5, run=run,
          reference="Tishby & Zaslavsky 2015 (information bottleneck); docs/bottleneck.md (ib_select)")
