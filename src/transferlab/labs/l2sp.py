"""Lab `l2sp`: L2-SP (Li, Grandvalet & Davoine 2018, "Explicit inductive bias for transfer learning with
convolutional networks", ICML) regularises towards the pre-trained weights w0 instead of towards 0.

Two claims, two experiments:

(a) For a linear model the L2-SP objective has a closed form, and the library's trainer reaches it. Fixed
    features: efficientnet_lite0 (ImageNet) pooled features of digits at 64 px, standardised with the source
    examples' mean and spread. Task: regression of y = +1 for digits 5-9, -1 for 0-4. The "pre-trained" linear
    head w0 is the ridge fit on `source` examples; the target is `n` other examples (drawn by the seed). The
    objective the trainer optimises is 1/(2n) ||X w - y||^2 + alpha/2 ||w - w0||^2 (SquaredError + `l2sp`),
    whose minimiser is w* = (X^T X / n + alpha I)^-1 (X^T y / n + alpha w0). The trainer (SGD, full batch,
    constant rate 1/L, L the largest curvature) starts at w0. Check: tolerance minus ||w - w*|| / ||w* - w0||,
    the distance left as a share of the way from w0 to w* (positive: closer than the tolerance).

(b) On a small target, L2-SP beats plain L2 (weight decay towards 0): efficientnet_lite0 fine-tuned on
    `n_small` digits (64 px, SGD as in the paper, BatchNorm statistics kept) with `l2sp:alpha=A,beta=A` against
    `full` with coupled weight decay A (SGD's L2 term: the same penalty towards 0). The strength is chosen per
    method on the validation split (and the best epoch by validation accuracy); the number compared is the TEST
    accuracy of a held-out digits test split (digits written as an image folder with train/val/test). Check:
    test accuracy of L2-SP minus that of L2, per seed.
"""
from __future__ import annotations

import torch

from transferlab.labs._runs import IMAGE_MODEL, run_config
from transferlab.labs.base import Lab, LabContext, LabResult
from transferlab.labs.verdict import Check

TOLERANCE = 0.01  # share of ||w* - w0|| the trained weights may still be away from w*


def l2sp_closed_form(X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, alpha: float) -> torch.Tensor:
    """argmin_w 1/(2n) ||X w - y||^2 + alpha/2 ||w - w0||^2 = (X^T X / n + alpha I)^-1 (X^T y / n + alpha w0).
    X: (n, d), y: (n,), w0: (d,)."""
    n, d = X.shape
    A = X.T @ X / n + alpha * torch.eye(d, dtype=X.dtype)
    return torch.linalg.solve(A, X.T @ y / n + alpha * w0)


def _features(quick: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features (N, 1280), digit labels (N,)) of a stratified subsample of digits' train split."""
    from transferlab.runs import prepare
    from transferlab.training.evaluate import ordered_loader, to_device

    config = run_config(IMAGE_MODEL, "digits", "linear_probe", 0, image_size=64, max_train=300 if quick else 1000)
    data, model, _ = prepare(config)
    model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for batch in ordered_loader(data.train, 128, data.collate):
            feats.append(model.features(to_device(batch, "cpu")).double())
            labels.append(batch["labels"])
    digits = torch.tensor([int(data.classes[i]) for i in torch.cat(labels)])
    return torch.cat(feats), digits


def _linear_model(w0: torch.Tensor):
    """A TransferModel whose backbone is the identity on fixed features and whose head is y = x . w (no
    intercept, like the closed form), started at w0 and counted as pre-trained (L2-SP pulls it to w0)."""
    from torch import nn

    from transferlab.models._config import PretrainedCfg
    from transferlab.models.transfer_model import TransferModel

    cfg = PretrainedCfg(name="linear", modality="image", architecture="linear")
    model = TransferModel(cfg, nn.Identity(), w0.numel(), 1, [])
    model.head.register_parameter("bias", None)
    with torch.no_grad():
        model.head.weight.copy_(w0.float()[None])
    model.new_prefixes = set()
    return model


def _train_linear(ctx: LabContext, name: str, X, y, w0, alpha: float, epochs: int) -> torch.Tensor:
    """The library's Trainer with `l2sp:alpha=A,beta=0` and squared error, full batch; the last weights."""
    from torch.utils.data import TensorDataset

    from transferlab.data import DataBundle
    from transferlab.data._errors import SkipLog
    from transferlab.strategies import parse_strategy
    from transferlab.training.checkpoint import load_checkpoint
    from transferlab.training.config import TrainConfig
    from transferlab.training.objectives import SquaredError
    from transferlab.training.trainer import Trainer

    Xf, yf = X.float(), y.float()
    n = X.shape[0]
    # The curvature of the objective is X^T X / n + alpha I; a step of 1/L (L its largest eigenvalue) is stable.
    curvature = float(torch.linalg.eigvalsh(X.T @ X / n).max()) + alpha
    data = DataBundle(kind="image", classes=["y"], train=TensorDataset(Xf, yf), val=TensorDataset(Xf, yf),
                      test=None, collate=lambda items: {"pixel_values": torch.stack([x for x, _ in items]),
                                                        "labels": torch.stack([t for _, t in items])},
                      skipped=SkipLog(), source="digits features")
    config = TrainConfig(epochs=epochs, lr=1.0 / curvature, batch_size=n, optimizer="sgd", weight_decay=0.0,
                         schedule="constant", warmup=0.0, grad_clip=0.0, device="cpu", cache=False)
    folder = ctx.run_dir(name)
    if not (folder / "checkpoint" / "last.safetensors").is_file():
        Trainer(_linear_model(w0), parse_strategy(f"l2sp:alpha={alpha},beta=0"), data, config, folder,
                objective=SquaredError()).fit()
    state = load_checkpoint(folder / "checkpoint" / "last.safetensors")[0]
    return state["head.weight"][0].double()


def _closed_form_part(ctx: LabContext) -> tuple[list[dict], list[float]]:
    alpha, source, n, epochs = 0.1, 200, (40 if ctx.quick else 60), (300 if ctx.quick else 600)
    X_all, digits = _features(ctx.quick)
    y_all = torch.where(digits >= 5, 1.0, -1.0).double()
    Xs_raw, ys = X_all[:source], y_all[:source]
    # Centred on the source mean and scaled by one number (the source's RMS spread), not per feature: many pooled
    # features are near-constant on digits, and dividing by their tiny spread would blow up the curvature.
    X_all = (X_all - Xs_raw.mean(0)) / Xs_raw.var(0).mean().sqrt()
    Xs = X_all[:source]
    w0 = l2sp_closed_form(Xs, ys, torch.zeros(X_all.shape[1], dtype=X_all.dtype), 1.0)  # ridge: "pre-trained"
    rows, values = [], []
    for seed in ctx.seeds:
        g = torch.Generator().manual_seed(seed)
        pick = source + torch.randperm(X_all.shape[0] - source, generator=g)[:n]
        X, y = X_all[pick], y_all[pick]
        closed = l2sp_closed_form(X, y, w0, alpha)
        ridge0 = l2sp_closed_form(X, y, torch.zeros_like(w0), alpha)  # plain L2 towards 0, same strength
        trained = _train_linear(ctx, f"linear_s{seed}", X, y, w0, alpha, epochs)
        path = ctx.save_measure(f"closed_form_s{seed}", {
            "alpha": alpha, "n": n, "features": int(X.shape[1]), "epochs": epochs,
            "distance_to_closed_form": float((trained - closed).norm()),
            "closed_form_move": float((closed - w0).norm()),
            "relative_distance": float((trained - closed).norm() / (closed - w0).norm()),
            "plain_l2_from_l2sp": float((ridge0 - closed).norm() / (closed - w0).norm()),
            "start_relative_distance": 1.0})
        rel = ctx.read(path, "relative_distance")
        rows.append({"seed": seed, "relative_distance": rel, "tolerance": TOLERANCE,
                     "features": ctx.read(path, "features"),
                     "plain_l2_from_l2sp": ctx.read(path, "plain_l2_from_l2sp"),
                     "closed_form_move": ctx.read(path, "closed_form_move"), "n": n, "alpha": alpha})
        values.append(TOLERANCE - rel)
    return rows, values


def _small_target_part(ctx: LabContext) -> tuple[list[dict], list[float], list[float]]:
    from transferlab.labs._digits_folder import write_digits_folder

    folder = str(write_digits_folder(ctx.out / "data" / "digits", size=64))
    # quick: the library's default l2sp alpha for both; full: the strength is chosen on validation
    strengths = [0.1] if ctx.quick else [0.01, 0.1, 1.0]
    n, epochs = (50 if ctx.quick else 100), (5 if ctx.quick else 10)
    options = {"image_size": 64, "bn_stats": "frozen", "lr": 0.02, "batch_size": 16, "optimizer": "sgd",
               "epochs": epochs, "max_train": n, "max_val": 150, "patience": 0}
    rows = []
    for method in ("l2sp", "l2"):
        for a in strengths:
            for seed in ctx.seeds:
                if method == "l2sp":  # no decay towards 0 anywhere: the pull goes to w0 (new head: beta)
                    spec, extra = f"l2sp:alpha={a:g},beta={a:g}", {"weight_decay": 0.0}
                else:  # SGD's weight decay is the coupled L2 term, towards 0
                    spec, extra = "full", {"weight_decay": a}
                name = f"{method}_a{a:g}_s{seed}"
                ctx.finetune(name, run_config(IMAGE_MODEL, folder, spec, seed, **options, **extra))
                rows.append({"method": method, "strength": a, "seed": seed, "spec": spec,
                             "val_accuracy": ctx.read(f"runs/{name}/metrics.json", "val.accuracy"),
                             "test_accuracy": ctx.read(f"runs/{name}/metrics.json", "test.accuracy")})
    chosen = {}
    for method in ("l2sp", "l2"):
        for seed in ctx.seeds:
            mine = [r for r in rows if (r["method"], r["seed"]) == (method, seed)]
            best = max(mine, key=lambda r: (r["val_accuracy"], -r["strength"]))  # selected on validation
            best["selected"] = True
            chosen[method, seed] = best
    diffs = [chosen["l2sp", s]["test_accuracy"] - chosen["l2", s]["test_accuracy"] for s in ctx.seeds]
    return rows, diffs, strengths


def run(ctx: LabContext) -> LabResult:
    from transferlab.figures import new_figure

    linear_rows, closeness = _closed_form_part(ctx)
    target_rows, diffs, strengths = _small_target_part(ctx)
    n_small = ctx.read(f"runs/l2sp_a{strengths[0]:g}_s{ctx.seeds[0]}/metrics.json", "data_summary.train")
    checks = [
        Check("the trainer reaches the closed form",
              f"{TOLERANCE:g} minus ||w - w*|| / ||w* - w0|| (the trained linear head's distance from the L2-SP "
              f"closed form, as a share of the way from w0 to w*)", closeness,
              margin=TOLERANCE / 10),  # a tenth of the tolerance inside it, so round-off cannot decide
        Check("L2-SP beats L2 on a small target",
              f"TEST accuracy of l2sp minus full with weight decay (strength selected on validation), "
              f"{n_small:.0f} training images", diffs, unit="accuracy", margin=0.01),  # one accuracy point
    ]
    fig, (left, right) = new_figure(1, 2, figsize=(10, 4))
    seeds = [r["seed"] for r in linear_rows]
    left.bar([x - 0.2 for x in range(len(seeds))], [r["relative_distance"] for r in linear_rows], 0.4,
             label="trained vs closed form")
    left.bar([x + 0.2 for x in range(len(seeds))], [r["plain_l2_from_l2sp"] for r in linear_rows], 0.4,
             label="plain L2 solution vs closed form")
    left.axhline(TOLERANCE, color="k", ls=":", label=f"tolerance {TOLERANCE:g}")
    left.set_yscale("log")
    left.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    left.set_ylabel("distance / ||w* - w0||")
    left.set_title("(a) linear head on fixed features")
    left.legend(fontsize=8)
    for method, marker in (("l2sp", "o-"), ("l2", "s--")):
        means = [sum(r["test_accuracy"] for r in target_rows if (r["method"], r["strength"]) == (method, a))
                 / len(ctx.seeds) for a in strengths]
        right.plot(strengths, means, marker, label=f"{method} (test)")
    right.set_xscale("log")
    right.set_xlabel("penalty strength (alpha, or weight decay)")
    right.set_ylabel("test accuracy (mean over seeds)")
    right.set_title(f"(b) digits, {n_small:.0f} training images")
    right.legend()
    rel = [r["relative_distance"] for r in linear_rows]
    plain = [r["plain_l2_from_l2sp"] for r in linear_rows]
    sel = [r for r in target_rows if r.get("selected")]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    summary = (f"(a) On {linear_rows[0]['n']} examples with {linear_rows[0]['features']:.0f} fixed features and alpha="
               f"{linear_rows[0]['alpha']:g}, the trained head ended {max(rel):.2g} (largest over seeds) of the way "
               f"from w0 to the closed-form L2-SP solution away from it (tolerance {TOLERANCE:g}); the plain-L2 "
               f"solution of the same strength lies {mean(plain):.2f} of that way from it, so the two objectives "
               f"are told apart. (b) With {n_small:.0f} training images, L2-SP's TEST accuracy was "
               f"{mean([r['test_accuracy'] for r in sel if r['method'] == 'l2sp']):.3f} and plain L2's "
               f"{mean([r['test_accuracy'] for r in sel if r['method'] == 'l2']):.3f} (mean over seeds, strength "
               f"and epoch selected on validation from {', '.join(f'{a:g}' for a in strengths)}); difference "
               f"{mean(diffs):+.3f} per seed on average.")
    notes = ["(b) numbers named test_accuracy are on the held-out test split of the digits folder; the strength "
             "and the best epoch were chosen on its validation split.",
             "(b) uses SGD (momentum 0.9) as the paper does: with SGD, weight decay is the coupled L2 penalty "
             "towards 0, the paper's baseline; l2sp gets no weight decay."]
    if ctx.quick:
        notes.append("quick: one strength (0.1, l2sp's default alpha), so only the best epoch is selected on validation.")
    return LabResult(checks, {"closed_form": linear_rows, "small_target": target_rows}, fig, summary, notes)


LAB = Lab(name="l2sp", chapter=70, title="L2-SP: a pull towards the pre-trained weights",
          claim="The L2-SP objective of a linear model has a closed form that training reaches, and on a small "
                "target L2-SP generalises better than plain L2 towards zero.",
          data="digits features and a digits image folder (train/val/test), efficientnet_lite0 (ImageNet) at "
               "64 px", minutes=5.5, quick_minutes=1.0, run=run,
          reference="Li, Grandvalet & Davoine 2018, Explicit inductive bias for transfer learning with "
                    "convolutional networks (ICML)")
