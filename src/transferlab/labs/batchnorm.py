"""Lab `batchnorm`: BatchNorm statistics under covariate shift (Li et al. 2016, "Revisiting batch normalization
for practical domain adaptation", AdaBN). A network normalises each layer with the running statistics of the
data it was trained on; on shifted inputs those statistics no longer fit, accuracy falls with the size of the
shift, and re-estimating the statistics on the shifted data (AdaBN: no label, no weight trained) recovers part
of it.

What runs (digits written as an image folder with train/val/test, 64 px, efficientnet_lite0 from ImageNet):
1. the BatchNorm statistics are first re-estimated on clean digits (`adapt_bn_run` on a one-epoch linear probe,
   then `export_source_weights`), so the model is one whose statistics are the clean target's, as AdaBN assumes;
2. per seed, `full` fine-tuning from those weights with the statistics kept (`bn_stats=frozen`);
3. per corruption severity (Gaussian noise, `corrupt_folder`, ImageNet-C's levels; severity 0 is clean): the
   TEST split's accuracy as trained, the BatchNorm shift of the test inputs (`bn_shift`: symmetric KL between the
   layers' input statistics and the running ones, mean over layers), and the test accuracy after `adapt_batchnorm`
   on the corrupted VALIDATION split's images (labels unused).

Checks (per seed): (a) accuracy falls with severity: clean minus highest severity; (b) AdaBN's gain at the
highest severity: adapted minus as trained; (c) the BatchNorm shift grows: mean symmetric KL at the highest
severity minus on clean data.
"""
from __future__ import annotations

import json

from transferlab.labs._runs import IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

KIND = "gaussian_noise"
STRIDE = 2  # the BN shift and AdaBN's estimate use every 2nd image of their split


def _clean_bn_weights(ctx: LabContext, folder: str) -> str:
    """ImageNet weights whose BatchNorm statistics are re-estimated on the clean digits training images."""
    from transferlab.diagnostics.adabn import adapt_bn_run
    from transferlab.diagnostics.source import export_source_weights

    weights = ctx.out / "weights" / "clean_bn.safetensors"
    if weights.is_file():
        return str(weights)
    ctx.finetune("probe", run_config(IMAGE_MODEL, folder, "linear_probe", 0, image_size=64, bn_stats="frozen",
                                     epochs=1, max_train=100, max_val=50))
    adapted = ctx.run_dir("clean_bn")
    adapt_bn_run(ctx.run_dir("probe"), folder, adapted, split="train", overwrite=True)
    weights.parent.mkdir(parents=True, exist_ok=True)
    export_source_weights(adapted, weights)
    return str(weights)


def _shifted(ctx: LabContext, folder: str, severity: int) -> str:
    from transferlab.diagnostics.corrupt import corrupt_folder

    if severity == 0:
        return folder
    out = ctx.out / "data" / f"{KIND}_{severity}"
    done = out.parent / f"{out.name}.json"
    if not done.is_file():
        result = corrupt_folder(folder, out, KIND, severity, seed=0, params="imagenet")  # as measured
        done.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return str(out)


def _measure(run_dir, data_path: str) -> dict:
    """Test accuracy as trained, BatchNorm shift of the test inputs, and test accuracy after AdaBN on the
    validation images of the same data."""
    from torch.utils.data import Subset

    from transferlab.diagnostics._common import make_loader
    from transferlab.diagnostics.adabn import adapt_batchnorm
    from transferlab.diagnostics.bn import bn_shift
    from transferlab.runs import load_run
    from transferlab.training.evaluate import evaluate, ordered_loader

    config, data, model, _ = load_run(run_dir, data_path)
    test = ordered_loader(data.test, 64, data.collate)
    before = evaluate(model, test, "cpu")
    # Every STRIDE-th image: the splits are stored class by class, so a prefix would hold a few digits only.
    shift_on, adapt_on = (Subset(d, range(0, len(d), STRIDE)) for d in (data.test, data.val))
    layers, examples = bn_shift(model, make_loader(data, shift_on, 64), "cpu")
    _, _, adapted = adapt_batchnorm(model, make_loader(data, adapt_on, 64), "cpu")
    after = evaluate(model, test, "cpu")
    return {"data": data_path, "test_examples": before["n"], "accuracy": before["accuracy"],
            "adabn_accuracy": after["accuracy"], "mean_skl": sum(l.skl for l in layers) / len(layers),
            "bn_layers": len(layers), "shift_examples": examples, "adabn_examples": adapted}


def run(ctx: LabContext) -> LabResult:
    from transferlab.figures import new_figure
    from transferlab.labs._digits_folder import write_digits_folder

    severities = [0, 3, 5] if ctx.quick else [0, 1, 2, 3, 4, 5]
    folder = str(write_digits_folder(ctx.out / "data" / "digits", size=64))
    weights = _clean_bn_weights(ctx, folder)
    options = {"image_size": 64, "bn_stats": "frozen", "lr": 2e-3, "epochs": 3 if ctx.quick else 5,
               "max_train": 300 if ctx.quick else None, "max_val": 150, "patience": 0}
    rows = []
    for seed in ctx.seeds:
        name = f"model_s{seed}"
        ctx.finetune(name, run_config(IMAGE_MODEL, folder, "full", seed, weights=weights, **options))
        for severity in severities:
            path = ctx.save_measure(f"{name}_severity{severity}",
                                    _measure(ctx.run_dir(name), _shifted(ctx, folder, severity)))
            rows.append({"seed": seed, "severity": severity, "accuracy": ctx.read(path, "accuracy"),
                         "adabn_accuracy": ctx.read(path, "adabn_accuracy"), "mean_skl": ctx.read(path, "mean_skl")})

    def at(seed, severity, key):
        return next(r[key] for r in rows if (r["seed"], r["severity"]) == (seed, severity))

    top = severities[-1]
    checks = [
        Check("accuracy falls with severity", f"TEST accuracy on clean digits minus on {KIND} severity {top}",
              [at(s, 0, "accuracy") - at(s, top, "accuracy") for s in ctx.seeds], unit="accuracy",
              margin=0.01),  # one accuracy point: a smaller drop is not a fall worth the name
        Check("AdaBN recovers part of it", f"TEST accuracy at severity {top} after AdaBN minus as trained",
              [at(s, top, "adabn_accuracy") - at(s, top, "accuracy") for s in ctx.seeds], unit="accuracy",
              margin=0.01),  # one accuracy point recovered
        Check("the BatchNorm statistics shift grows", f"mean symmetric KL (test inputs vs running statistics) at "
              f"severity {top} minus on clean data", [at(s, top, "mean_skl") - at(s, 0, "mean_skl")
                                                      for s in ctx.seeds],
              margin=0.5),  # half a nat: about the mismatch clean data itself shows (0.6-0.8)
    ]

    def mean(severity, key):
        return sum(at(s, severity, key) for s in ctx.seeds) / len(ctx.seeds)

    fig, (left, right) = new_figure(1, 2, figsize=(10, 4))
    left.plot(severities, [mean(v, "accuracy") for v in severities], "o-", label="as trained")
    left.plot(severities, [mean(v, "adabn_accuracy") for v in severities], "s--", label="after AdaBN")
    left.set_xlabel(f"{KIND} severity (0: clean)")
    left.set_ylabel("test accuracy (mean over seeds)")
    left.set_title("digits, efficientnet_lite0 at 64 px")
    left.legend()
    right.plot(severities, [mean(v, "mean_skl") for v in severities], "o-")
    right.set_yscale("log")
    right.set_xlabel(f"{KIND} severity (0: clean)")
    right.set_ylabel("mean symmetric KL over BN layers")
    right.set_title("BatchNorm statistics shift (test inputs)")
    table = "; ".join(f"severity {v}: {mean(v, 'accuracy'):.3f} -> {mean(v, 'adabn_accuracy'):.3f} with AdaBN, "
                      f"shift {mean(v, 'mean_skl'):.3g}" for v in severities)
    summary = (f"TEST accuracy of the digits model (mean over {len(ctx.seeds)} seeds) as trained -> after AdaBN on "
               f"the corrupted validation images, and the mean BatchNorm symmetric KL of the test inputs, under "
               f"{KIND}: {table}. On clean data AdaBN changed test accuracy by "
               f"{mean(0, 'adabn_accuracy') - mean(0, 'accuracy'):+.3f}; at severity {top} by "
               f"{mean(top, 'adabn_accuracy') - mean(top, 'accuracy'):+.3f}, where the model as trained is at "
               f"{mean(top, 'accuracy'):.3f} (chance is 0.1).")
    notes = ["accuracies are on the digits folder's test split; the best epoch was chosen on the clean "
             "validation split; AdaBN re-estimates on every "
             f"{STRIDE}nd corrupted validation image (the BN shift: every {STRIDE}nd test image), never the test ones.",
             "the model's BatchNorm statistics were re-estimated on clean digits before fine-tuning and kept during "
             "it while the weights moved; AdaBN re-estimates them for the fine-tuned weights, so it changes the "
             "model on clean data too (severity 0 above measures how much)."]
    return LabResult(checks, {"runs": rows}, fig, summary, notes)


LAB = Lab(name="batchnorm", chapter=90, title="BatchNorm statistics under covariate shift",
          claim="Accuracy falls as the test inputs shift away from the training data, the BatchNorm statistics "
                "shift with them, and re-estimating those statistics on the shifted data (AdaBN) recovers part "
                "of the loss.",
          data="digits written as an image folder (train/val/test), Gaussian noise at severities, "
               "efficientnet_lite0 (ImageNet) at 64 px", minutes=3.5, quick_minutes=1.5, run=run,
          reference="Li, Wang, Shi, Liu & Hou 2016, Revisiting batch normalization for practical domain "
                    "adaptation (AdaBN)")
