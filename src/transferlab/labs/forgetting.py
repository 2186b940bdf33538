"""Lab `forgetting`: catastrophic forgetting as a tug-of-war (McCloskey & Cohen 1989; Kirkpatrick et al. 2017,
"Overcoming catastrophic forgetting in neural networks", PNAS). Training on a new task pulls the weights away
from the old task's optimum and the old task is forgotten; pulling back (EWC: towards w0, weighted by the source
task's Fisher information; L2-SP, Li et al. 2018: towards w0 uniformly) or distilling the old outputs (LwF, Li &
Hoiem 2016) forgets less, at some cost on the new task.

Sequential tasks on the bundled digits (the logic of benchmarks/forgetting_digits.py), per seed:
1. source task: `test_efficientnet` (timm, random init) trained on digits 0-4 at 32 px;
2. its backbone and head exported as a --weights file (`export_source_weights`): the head becomes the source head;
3. target task: digits 5-9 from those weights with `full:backbone_lr=1` (one rate for every layer, the usual
   continual-learning setting) alone and with `ewc`, `lwf` or `l2sp` added;
4. `forgetting_for_run(run, source_data="digits:0-4")`: source-task accuracy (held-out 0-4 validation split) of
   the source model and of the fine-tuned backbone with the original source head; forgetting = before - after.

Checks: (a) `full` forgets (forgetting > 0, per seed); (b) one per method: forgetting(full) - forgetting(method),
per seed. Reported besides: the target validation accuracy of each run (the cost) and the relative weight
distance ||w - w0|| / ||w0|| of the backbone from the source optimum (`diagnostics.weights`).
"""
from __future__ import annotations

from transferlab.labs._runs import run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

MODEL = "test_efficientnet"
FULL = "full:backbone_lr=1"
# ewc's lam: sum_i F_i (w_i - w0_i)^2 after full fine-tuning is ~5e-4 on this task (docs/diagnostics.md), so
# lam ~1e3 makes the penalty comparable to the cross-entropy; lwf and l2sp at the library's defaults.
METHODS = {"ewc": f"{FULL}+ewc:lam=3000", "lwf": f"{FULL}+lwf", "l2sp": f"{FULL}+l2sp"}
SOURCE, TARGET = "digits:0-4", "digits:5-9"


def _weight_distance(run_dir) -> float:
    """||w - w0|| / ||w0|| over every backbone parameter with a source value (w0: the source model)."""
    from transferlab.diagnostics._common import reference_model
    from transferlab.diagnostics.weights import plain_start_weights, relative_weight_change
    from transferlab.runs import load_run_model

    config, model, _ = load_run_model(run_dir)
    names = [n for n, _ in model.named_parameters() if not model.is_new_param(n)]
    return relative_weight_change(dict(model.named_parameters()), plain_start_weights(reference_model(config)),
                                  [names])[0]


def run(ctx: LabContext) -> LabResult:
    from transferlab.diagnostics.forgetting import forgetting_for_run
    from transferlab.diagnostics.source import export_source_weights
    from transferlab.figures import new_figure

    options = {"image_size": 32, "epochs": 3, "lr": 3e-3, "device": "cpu"}
    strategies = {"full": FULL, **METHODS}
    rows = []
    for seed in ctx.seeds:
        source = f"source_s{seed}"
        ctx.finetune(source, run_config(MODEL, SOURCE, "full", seed, **options))
        weights = ctx.out / "weights" / f"source_s{seed}.safetensors"
        if not weights.is_file():
            weights.parent.mkdir(parents=True, exist_ok=True)
            export_source_weights(ctx.run_dir(source), weights)
        cache: dict = {}
        for label, spec in strategies.items():
            name = f"{label}_s{seed}"
            ctx.finetune(name, run_config(MODEL, TARGET, spec, seed, weights=str(weights), source_data=SOURCE,
                                          **options))
            f = forgetting_for_run(ctx.run_dir(name), source_data=SOURCE, cache=cache)
            path = ctx.save_measure(f"forgetting_{name}", {**f.to_dict(),
                                                          "weight_distance": _weight_distance(ctx.run_dir(name))})
            rows.append({"strategy": label, "spec": spec, "seed": seed,
                         "source_accuracy_before": ctx.read(path, "accuracy_before"),
                         "source_accuracy_after": ctx.read(path, "accuracy_after"),
                         "forgetting": ctx.read(path, "forgetting"),
                         "weight_distance": ctx.read(path, "weight_distance"),
                         "target_val_accuracy": ctx.read(f"runs/{name}/metrics.json", "val.accuracy")})

    def at(label, seed, key):
        return next(r[key] for r in rows if (r["strategy"], r["seed"]) == (label, seed))

    checks = [Check("full fine-tuning forgets", f"source (0-4) val accuracy before minus after {FULL} on 5-9",
                    [at("full", s, "forgetting") for s in ctx.seeds], unit="accuracy",
                    margin=0.01)]  # one point of source accuracy lost
    checks += [Check(f"{label} forgets less", f"forgetting of {FULL} minus that of {spec}",
                     [at("full", s, "forgetting") - at(label, s, "forgetting") for s in ctx.seeds], unit="accuracy",
                     margin=0.01)  # one point of source accuracy kept
               for label, spec in METHODS.items()]

    def mean(label, key):
        return sum(at(label, s, key) for s in ctx.seeds) / len(ctx.seeds)

    labels = list(strategies)
    fig, (left, right) = new_figure(1, 2, figsize=(10, 4))
    xs = range(len(labels))
    left.bar([x - 0.2 for x in xs], [mean(k, "forgetting") for k in labels], 0.4, label="forgetting (0-4)")
    left.bar([x + 0.2 for x in xs], [1 - mean(k, "target_val_accuracy") for k in labels], 0.4,
             label="target error (5-9)")
    left.set_xticks(list(xs), labels)
    left.set_ylabel("accuracy points (mean over seeds)")
    left.set_title("the tug-of-war: old task lost vs new task missed")
    left.legend()
    for label in labels:
        right.scatter([at(label, s, "weight_distance") for s in ctx.seeds],
                      [at(label, s, "forgetting") for s in ctx.seeds], label=label)
    right.set_xlabel("||w - w0|| / ||w0|| (backbone, from the source optimum)")
    right.set_ylabel("forgetting of digits 0-4")
    right.set_title("distance from the source optimum")
    right.legend()
    parts = ", ".join(f"{k} {mean(k, 'forgetting'):+.3f} (target val {mean(k, 'target_val_accuracy'):.3f}, "
                      f"weight distance {mean(k, 'weight_distance'):.3f})" for k in labels)
    summary = (f"Source model on digits 0-4: val accuracy {mean('full', 'source_accuracy_before'):.3f}. After "
               f"training on 5-9, forgetting (before minus after, 0-4 validation split) by strategy, mean over "
               f"{len(ctx.seeds)} seeds: {parts}.")
    notes = ["target accuracies are on the 5-9 validation split at the best epoch (chosen on that split: "
             "digits has no test split); source accuracies on the 0-4 validation split, which no run selects on.",
             "one source model per seed: each seed repeats the whole sequence."]
    return LabResult(checks, {"runs": rows}, fig, summary, notes)


LAB = Lab(name="forgetting", chapter=40, title="Catastrophic forgetting as a tug-of-war",
          claim="Training on a new task pulls the weights away from the old task's optimum and the old task is "
                "forgotten; EWC, LwF and L2-SP forget less.",
          data="digits 0-4 then 5-9 (bundled), test_efficientnet (random init) at 32 px", minutes=1,
          quick_minutes=1.0, run=run,
          reference="Kirkpatrick et al. 2017, Overcoming catastrophic forgetting in neural networks (PNAS); Li & "
                    "Hoiem 2016, Learning without forgetting; Li et al. 2018 (L2-SP)")
