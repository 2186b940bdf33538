"""Lab `overfitting`: on a tiny target, making more depth groups trainable drives the training error down and the
validation error up; more training examples close the gap."""
from __future__ import annotations

from transferlab.labs._runs import DIGITS, IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check


def _sweep(quick: bool) -> tuple[list[tuple[str, str]], int, int, int]:
    """(strategies from none to all trainable, tiny n, larger n, epochs). efficientnet_lite0 has 9 backbone
    groups: freeze:k=9 trains the head alone, freeze:k=0 everything."""
    ks = [9, 6, 0] if quick else [9, 7, 5, 3, 0]
    return [(f"k{k}", f"freeze:k={k}") for k in ks], (40 if quick else 60), (200 if quick else 500), \
        (8 if quick else 12)


def run(ctx: LabContext) -> LabResult:
    from transferlab.figures import new_figure

    sweep, tiny, large, epochs = _sweep(ctx.quick)
    options = {**DIGITS, "epochs": epochs, "max_val": 300, "patience": 0}
    rows = []
    for size in (tiny, large):
        for label, strategy in (sweep if size == tiny else [sweep[0], sweep[-1]]):
            for seed in ctx.seeds:
                name = f"n{size}_{label}_s{seed}"
                metrics = ctx.finetune(name, run_config(IMAGE_MODEL, "digits", strategy, seed, max_train=size,
                                                        **options))
                train = ctx.read(f"runs/{name}/history.jsonl", f"{epochs - 1}.train_accuracy")
                val = ctx.read(f"runs/{name}/history.jsonl", f"{epochs - 1}.val_accuracy")
                rows.append({"n_train": size, "strategy": strategy, "seed": seed,
                             "trainable_params": metrics["trainable_params"], "train_accuracy": train,
                             "val_accuracy": val, "gap": train - val})

    def at(size, strategy, seed, key):
        return next(r[key] for r in rows if (r["n_train"], r["strategy"], r["seed"]) == (size, strategy, seed))

    fewest, most = sweep[0][1], sweep[-1][1]
    checks = [
        Check("training error falls", f"train accuracy of {most} minus {fewest} at n={tiny} (last epoch)",
              [at(tiny, most, s, "train_accuracy") - at(tiny, fewest, s, "train_accuracy") for s in ctx.seeds],
              margin=0.01),  # one accuracy point
        Check("validation error rises", f"val accuracy of {fewest} minus {most} at n={tiny}",
              [at(tiny, fewest, s, "val_accuracy") - at(tiny, most, s, "val_accuracy") for s in ctx.seeds],
              margin=0.01),  # one accuracy point
        Check("more data closes the gap", f"train-val gap of {most} at n={tiny} minus at n={large}",
              [at(tiny, most, s, "gap") - at(large, most, s, "gap") for s in ctx.seeds],
              margin=0.01),  # one accuracy point of gap
    ]
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    for size, ax in zip((tiny, large), axes):
        strategies = [s for _, s in (sweep if size == tiny else [sweep[0], sweep[-1]])]
        for key, style in (("train_accuracy", "o-"), ("val_accuracy", "s--")):
            means = [sum(at(size, st, s, key) for s in ctx.seeds) / len(ctx.seeds) for st in strategies]
            params = [at(size, st, ctx.seeds[0], "trainable_params") for st in strategies]
            ax.plot(params, means, style, label=key.replace("_", " "))
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("accuracy (mean over seeds)")
        ax.set_title(f"digits, {size} training images")
        ax.legend()
    t, v, g = (c.values for c in checks)
    summary = (f"At {tiny} training images, making every group trainable ({most}) instead of the head alone "
               f"({fewest}) changed train accuracy by {sum(t) / len(t):+.3f} and validation accuracy by "
               f"{-sum(v) / len(v):+.3f} (mean over seeds); the train-validation gap of {most} was "
               f"{sum(g) / len(g):+.3f} larger at {tiny} than at {large} images.")
    return LabResult(checks, {"runs": rows}, fig, summary)


LAB = Lab(name="overfitting", chapter=30, title="Overfitting on a tiny target",
          claim="On a tiny target, making more depth groups trainable drives training error down and validation "
                "error up; more training data narrows the gap.",
          data="digits (bundled), efficientnet_lite0 (ImageNet) at 64 px", minutes=5, quick_minutes=1.5, run=run)
