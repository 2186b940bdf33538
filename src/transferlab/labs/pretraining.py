"""Lab `pretraining`: what pre-training transfers, and when it hurts. A model pre-trained on a source task helps a
related target (positive transfer), can do worse than training from scratch on an unrelated one (negative
transfer: Rosenstein et al. 2005, "To transfer or not to transfer"; Wang et al. 2019, "Characterizing and
avoiding negative transfer"), and a checkpoint stopped early on the source (its best validation epoch) transfers
at least as well as the last one (the source's specialisation late in training transfers least: Yosinski et al.
2014; Kornblith et al. 2019 on training regularisers and transfer).

Runs: `transferlab pretrain` of resnet10_cifar from random weights on digits 0-4 (the lab's own train/val/test
folders), keeping every epoch's checkpoint; then `full` fine-tuning from its first, best (source validation)
and last checkpoints and from its random-init entry on digits 5-9 (near: same domain, new classes) and on
hymenoptera at 32 px (distant: natural photographs; it has no test split, so a quarter of its training images is
held out as one, --test-fraction 0.25). Every number is test accuracy. The from-scratch baseline is trained as
`compare` trains it: the random-init entry with every parameter at the base rate (`full:backbone_lr=1`), its
BatchNorm mode and learning rate chosen among compare's candidate recipes (grid.SCRATCH_SEARCH) by mean
validation accuracy over the seeds. Checks, per seed: (a) near target, last checkpoint minus scratch; (b) distant target,
scratch minus last checkpoint (positive: negative transfer); (c) near target, best checkpoint minus last, a
non-inferiority claim with margin 0.01 ("as well": the 90% interval lies above -0.01).
"""
from __future__ import annotations

from pathlib import Path

from transferlab.labs._digits_folder import write_digits_folder
from transferlab.labs._runs import run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check


def _pretrain(ctx: LabContext, data: str, quick: bool) -> Path:
    from transferlab.pretraining import DEFAULT_MODEL, PRETRAIN_DEFAULTS, PRETRAIN_STRATEGY, pretrain
    from transferlab.runs import run_state

    folder = ctx.run_dir("source")
    state = run_state(folder)
    if state != "finished":
        options = {**PRETRAIN_DEFAULTS, "epochs": 8 if quick else 15, "batch_size": 64}
        config = run_config(DEFAULT_MODEL, data, PRETRAIN_STRATEGY, 0, classes="0,1,2,3,4",
                            **options)
        pretrain(config, folder, checkpoint_every=1, resume=state == "unfinished")
    ctx.runs.append("runs/source")
    return folder


def run(ctx: LabContext) -> LabResult:
    import json

    from transferlab.figures import new_figure

    data = str(write_digits_folder(ctx.out / "data" / "digits", size=64))
    source = _pretrain(ctx, data, ctx.quick)
    index = json.loads((source / "checkpoints" / "index.json").read_text())["epochs"]
    epochs = [e["epoch"] for e in index]
    best = max(index, key=lambda e: (e["val_accuracy"], -e["epoch"]))["epoch"]
    points = {"first": f"{source}@{epochs[0]}", "best": f"{source}@{best}", "last": f"{source}@{epochs[-1]}",
              "scratch": f"{source}@scratch"}
    for i, e in enumerate(index):
        ctx.read("runs/source/checkpoints/index.json", f"epochs.{i}.val_accuracy")
    near = {"classes": "5,6,7,8,9", "max_train": 60 if ctx.quick else 150, "epochs": 4 if ctx.quick else 8,
            "lr": 2e-3}
    distant = {"image_size": 32, "max_train": 100 if ctx.quick else None, "epochs": 4 if ctx.quick else 8,
               "lr": 2e-3, "test_fraction": 0.25}
    rows, scratch_choice = [], {}
    for target, spec, options, which in (("near", data, near, ("first", "best", "last")),
                                         ("distant", ctx.dataset("hymenoptera"), distant, ("last",))):
        for point in which:
            if point == "best" and best == epochs[-1]:
                continue  # the same checkpoint as `last`: the same runs
            for seed in ctx.seeds:
                name = f"{target}_{point}_s{seed}"
                ctx.finetune(name, run_config(points[point], spec, "full", seed, **options))
                rows.append({"target": target, "checkpoint": point, "seed": seed,
                             "source_epoch": {"first": epochs[0], "best": best, "last": epochs[-1]}.get(point, 0),
                             "accuracy": ctx.read(f"runs/{name}/metrics.json", "test.accuracy"), "split": "test"})
        scratch_choice[target] = _scratch(ctx, points["scratch"], spec, options, target)
        rows += [{"target": target, "checkpoint": "scratch", "seed": seed, "source_epoch": 0,
                  "accuracy": scratch_choice[target]["test_accuracy"][i], "split": "test"}
                 for i, seed in enumerate(ctx.seeds)]

    def acc(target, point, seed):
        point = "last" if point == "best" and best == epochs[-1] else point
        return next(r["accuracy"] for r in rows if (r["target"], r["checkpoint"], r["seed"]) == (target, point, seed))

    checks = [
        Check("positive transfer to a near target", "digits 5-9 test accuracy, last checkpoint minus scratch",
              [acc("near", "last", s) - acc("near", "scratch", s) for s in ctx.seeds],
              margin=0.01),  # one accuracy point
        Check("negative transfer to a distant target", "hymenoptera accuracy, scratch minus last checkpoint",
              [acc("distant", "scratch", s) - acc("distant", "last", s) for s in ctx.seeds],
              margin=0.01),  # one accuracy point
        Check("early-stopped checkpoint transfers as well", f"digits 5-9 test accuracy, best source epoch "
              f"({best}) minus last ({epochs[-1]})", [acc("near", "best", s) - acc("near", "last", s)
                                                      for s in ctx.seeds],
              kind="noninferiority", margin=0.01),  # "as well": no more than one accuracy point worse
    ]
    fig, (ax1, ax2) = new_figure(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [e["val_accuracy"] for e in index], "o-")
    ax1.axvline(best, ls=":", color="grey")
    ax1.set_xlabel("pre-training epoch")
    ax1.set_ylabel("source val accuracy (digits 0-4)")
    ax1.set_title("the source run")
    labels = ["scratch", "first", "best", "last"]
    for target, style in (("near", "o-"), ("distant", "s--")):
        shown = [p for p in labels if any(r["target"] == target and r["checkpoint"] == p for r in rows)
                 or (p == "best" and best == epochs[-1] and target == "near")]
        means = [sum(acc(target, p, s) for s in ctx.seeds) / len(ctx.seeds) for p in shown]
        ax2.plot(shown, means, style, label={"near": "digits 5-9 (test)", "distant": "hymenoptera (test)"}[target])
    ax2.set_ylabel("target accuracy (mean over seeds)")
    ax2.set_title("fine-tuned from each checkpoint")
    ax2.legend()
    a, b, c = (sum(ch.values) / len(ch.values) for ch in checks)
    summary = (f"The source reached {max(e['val_accuracy'] for e in index):.3f} validation accuracy (best epoch "
               f"{best} of {epochs[-1]}). On digits 5-9 the last checkpoint scored {a:+.3f} test accuracy against "
               f"scratch and the best-epoch checkpoint {c:+.3f} against the last; on hymenoptera scratch scored "
               f"{b:+.3f} against the last checkpoint (means over seeds).")
    return LabResult(checks, {"runs": rows, "source_epochs": index, "scratch_choice": scratch_choice}, fig, summary)


def _scratch(ctx: LabContext, model: str, data: str, options: dict, target: str) -> dict:
    """The baseline on one target: every candidate recipe over the seeds, the one with the highest mean validation
    accuracy kept (compare's rule: compare.results.SCRATCH_RULE); its per-seed test accuracies."""
    from transferlab.compare.grid import SCRATCH_SEARCH, SCRATCH_STRATEGY

    candidates = []
    for recipe in SCRATCH_SEARCH:
        tag = f"{recipe['bn_stats']}_x{recipe['lr_scale']:g}"
        val, test = [], []
        for seed in ctx.seeds:
            name = f"{target}_scratch_{tag}_s{seed}"
            config = run_config(model, data, SCRATCH_STRATEGY, seed,
                                **{**options, "bn_stats": recipe["bn_stats"], "lr": options["lr"] * recipe["lr_scale"]})
            ctx.finetune(name, config)
            val.append(ctx.read(f"runs/{name}/metrics.json", "val.accuracy"))
            test.append(ctx.read(f"runs/{name}/metrics.json", "test.accuracy"))
        candidates.append({"recipe": recipe, "val_accuracy": sum(val) / len(val), "test_accuracy": test})
    chosen = max(candidates, key=lambda c: c["val_accuracy"])  # first in search order on ties
    return {**chosen, "strategy": SCRATCH_STRATEGY, "candidates": candidates}


LAB = Lab(name="pretraining", chapter=80, title="Negative transfer and early-stopped pre-training",
          claim="Pre-training helps a related target, can hurt an unrelated one (negative transfer), and a "
                "checkpoint stopped early on the source transfers at least as well as the last.",
          data="digits 0-4 as source (resnet10_cifar pre-trained by the lab), digits 5-9 (near) and hymenoptera "
               "(distant) as targets", minutes=2, quick_minutes=1.5, run=run, datasets=("hymenoptera",),
          reference="Rosenstein et al. 2005; Wang et al. 2019; Yosinski et al. 2014")
