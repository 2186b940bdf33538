"""Lab `freezing`: selective freezing as regularisation. On a small target, training fewer parameters (freezing
the first k depth groups) can generalise better than fine-tuning everything, and the advantage shrinks as the
target grows (Yosinski et al. 2014 freeze transferred layers when the target is small; Kornblith et al. 2019 find
fine-tuning better given enough data).

Runs: `freeze:k` for several k (k = 9 trains efficientnet_lite0's head alone, k = 0 everything) on digits at a
small and a larger training-set size, each seed. The frozen depth (k) is selected per seed on validation
accuracy among the partial freezes (k > 0); its test accuracy is compared with full fine-tuning's test accuracy.
Checks, per seed: (a) test accuracy of the validation-selected freeze minus full fine-tuning's, at the small
size; (b) that advantage at the small size minus the same at the larger size.
"""
from __future__ import annotations

from transferlab.labs._digits_folder import write_digits_folder
from transferlab.labs._runs import DIGITS, IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check


def run(ctx: LabContext) -> LabResult:
    from transferlab.figures import new_figure

    ks = [9, 6, 3, 0] if not ctx.quick else [9, 6, 0]
    small, large = (40, 200) if ctx.quick else (60, 600)
    options = {**DIGITS, "epochs": 6 if ctx.quick else 8}
    data = str(write_digits_folder(ctx.out / "data" / "digits", size=64))  # val selects the frozen depth, test reports it
    rows = []
    for size in (small, large):
        for k in ks:
            for seed in ctx.seeds:
                name = f"n{size}_k{k}_s{seed}"
                metrics = ctx.finetune(name, run_config(IMAGE_MODEL, data, f"freeze:k={k}", seed,
                                                        max_train=size, **options))
                rows.append({"n_train": size, "k": k, "seed": seed, "trainable_params": metrics["trainable_params"],
                             "val_accuracy": ctx.read(f"runs/{name}/metrics.json", "val.accuracy"),
                             "test_accuracy": ctx.read(f"runs/{name}/metrics.json", "test.accuracy")})

    def row(size, k, seed):
        return next(r for r in rows if (r["n_train"], r["k"], r["seed"]) == (size, k, seed))

    def advantage(size, seed) -> tuple[float, int]:
        """(test accuracy of the val-selected partial freeze minus full's, the selected k)."""
        partial = [row(size, k, seed) for k in ks if k > 0]
        chosen = max(partial, key=lambda r: (r["val_accuracy"], -r["trainable_params"]))
        return chosen["test_accuracy"] - row(size, 0, seed)["test_accuracy"], chosen["k"]

    selected = [{"n_train": size, "seed": seed, "selected_k": advantage(size, seed)[1],
                 "test_advantage_over_full": advantage(size, seed)[0]} for size in (small, large) for seed in ctx.seeds]
    checks = [
        Check("freezing helps on small data", f"test accuracy of the val-selected freeze:k (k>0) minus full's, "
              f"n={small}", [advantage(small, s)[0] for s in ctx.seeds],
              margin=0.01),  # one accuracy point
        Check("the help shrinks with more data", f"that advantage at n={small} minus at n={large}",
              [advantage(small, s)[0] - advantage(large, s)[0] for s in ctx.seeds],
              margin=0.01),  # one accuracy point
    ]
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    for size, ax in zip((small, large), axes):
        params = [row(size, k, ctx.seeds[0])["trainable_params"] for k in ks]
        for key, style in (("val_accuracy", "s--"), ("test_accuracy", "o-")):
            means = [sum(row(size, k, s)[key] for s in ctx.seeds) / len(ctx.seeds) for k in ks]
            ax.plot(params, means, style, label=key.replace("_", " "))
        for k, p in zip(ks, params):
            ax.annotate(f"k={k}", (p, sum(row(size, k, s)["test_accuracy"] for s in ctx.seeds) / len(ctx.seeds)),
                        fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (freeze:k)")
        ax.set_ylabel("accuracy (mean over seeds)")
        ax.set_title(f"digits, {size} training images")
        ax.legend()
    a, b = (c.values for c in checks)
    summary = (f"At {small} training images the validation-selected partial freeze scored {sum(a) / len(a):+.3f} "
               f"test accuracy against full fine-tuning (mean over seeds; selected k per seed: "
               f"{[r['selected_k'] for r in selected if r['n_train'] == small]}); at {large} images the difference "
               f"was {sum(a) / len(a) - sum(b) / len(b):+.3f}.")
    return LabResult(checks, {"runs": rows, "selection": selected}, fig, summary)


LAB = Lab(name="freezing", chapter=50, title="Selective freezing as regularisation",
          claim="On a small target, freezing early depth groups (fewer trainable parameters) generalises better than "
                "fine-tuning everything, and the advantage shrinks as the target grows.",
          data="digits (bundled; written as train/val/test folders), efficientnet_lite0 (ImageNet) at 64 px", minutes=6.5, quick_minutes=1.5, run=run,
          reference="Yosinski et al. 2014; Kornblith et al. 2019")
