"""Linear probes per depth group (Alain and Bengio 2016, "Understanding intermediate layers using linear
classifier probes"): where in the network the target classes become linearly readable, before and after
fine-tuning.

For each backbone depth group (input side first; the new head is not probed) the group's output, mean-pooled to
(N, D_g) as for CKA (`_common.pool`: spatial maps over positions, token states over the non-padding tokens), is
standardised (StandardScaler fit on the train features) and read out by a multinomial logistic regression fit on
the train split; its train, val and test accuracies are reported. The estimator is fixed (C = 1.0, lbfgs,
max_iter 1000, deterministic) so that the numbers of two models, or two groups, differ only by the features;
with `c_grid`, C is chosen per group by validation accuracy and the test accuracy is the held-out estimate.

Cost: one forward pass per split (train, val, test when present), with `GroupOutputs` hooks collecting every
group's pooled output in that single pass: the prefix up to group k is computed once for all probes, not once per
probe. Memory: N x D_g float32 per group and split, so the train split is capped at `max_train` examples (a
stratified subset, fixed seed 0, so every model is probed on the same examples); val and test are used whole.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.diagnostics._common import GroupOutputs, has_reproducible_start, make_loader, pretrained_key, \
    reference_model, save_figure, split_of, target_batches
from transferlab.errors import ConfigError
from transferlab.diagnostics.registry import arg, one_of, register_diagnostic, section
from transferlab.sections import Bullets, Figure, Section, Table, Text

logger = logging.getLogger(__name__)

MAX_TRAIN = 2000  # train examples probed: N x D_g floats per group (D_g is 1280 for efficientnet_lite0's last)
REPORT_MAX_TRAIN = 500  # the comparison report probes every strategy: kept cheap
C = 1.0  # inverse L2 strength on standardised features: sklearn's default, no tuning on the evaluation data
MAX_ITER = 1000  # lbfgs converges well within this on a few thousand standardised examples
FLOAT_NOISE = 1e-4  # relative spread below which a feature counts as constant (see fit_probe)
EVAL_SPLITS = ("val", "test")
SUBSET_SEED = 0


@dataclass
class GroupProbe:
    name: str
    index: int
    dim: int  # D_g, the pooled output's width
    train_accuracy: float
    val_accuracy: float | None
    test_accuracy: float | None  # None without a test split


@dataclass
class ProbeEntry:
    groups: list[GroupProbe] = field(default_factory=list)
    c: list[float] = field(default_factory=list)  # the C each group's probe used (chosen per group with a grid)


@dataclass
class ProbeResult:
    source: str  # run dir or model name
    data: str
    split: str  # the evaluation split shown (table, plot); every split's accuracy is in the groups
    examples: dict  # {"train": used, "train_available": in the split, "val": n, "test": n or None}
    estimator: str
    majority_baseline: dict  # per split: accuracy of always predicting the train split's most frequent class
    entries: dict[str, ProbeEntry] = field(default_factory=dict)  # "pretrained", "finetuned"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def describe_estimator(c_grid: tuple[float, ...] | None = None) -> str:
    base = ("per depth group: mean-pooled output, StandardScaler fit on train, multinomial logistic regression "
            f"(sklearn lbfgs, max_iter {MAX_ITER})")
    if c_grid:
        return base + f", C chosen per group from {list(c_grid)} by val accuracy (report test)"
    return base + f", C = {C}"


# ---- features -------------------------------------------------------------------------------------------
@torch.no_grad()
def group_features(model, loader, device) -> tuple[list[np.ndarray | None], np.ndarray]:
    """(per backbone depth group its pooled outputs (N, D_g) float32, None for a group that did not run;
    labels (N,)), from one forward pass over the loader."""
    model.eval()
    backbone = model.num_backbone_groups  # groups 0..K-1; group K is the new head, not probed
    hooks = GroupOutputs(model)
    per_group: list[list[np.ndarray]] = [[] for _ in range(backbone)]
    labels = []
    try:
        for batch in target_batches(loader, device):
            outputs = hooks.run(model, batch)
            for k in range(backbone):
                if outputs[k] is not None:
                    per_group[k].append(outputs[k].float().cpu().numpy())  # (B, D_g)
            labels.append(batch["labels"].cpu().numpy())
    finally:
        hooks.close()
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    feats = [np.concatenate(chunks) if len(chunks) and sum(len(c) for c in chunks) == len(y) else None
             for chunks in per_group]
    return feats, y


def probe_splits(data, max_train: int = MAX_TRAIN) -> dict:
    """{split: dataset} probed: train (a stratified subset of at most `max_train`), val, and test if present."""
    from transferlab.data._split import stratified_subset

    train = data.train
    if max_train < len(train):
        train = train.subset(stratified_subset(train.targets, max_train, SUBSET_SEED, option="--max-train"))
    splits = {"train": train, "val": data.val}
    if data.test is not None:
        splits["test"] = data.test
    return splits


def split_features(model, splits: dict, data, device, batch_size: int) -> dict:
    """{split: (per-group features, labels)}: one forward pass per split."""
    out = {}
    for name, dataset in splits.items():
        logger.info("probe: forward pass over %s (%d examples)", name, len(dataset))
        out[name] = group_features(model, make_loader(data, dataset, batch_size), device)
    return out


# ---- probes ---------------------------------------------------------------------------------------------
def fit_probe(x_train: np.ndarray, y_train: np.ndarray, evals: dict[str, tuple[np.ndarray, np.ndarray]],
              c_grid: tuple[float, ...] | None = None) -> tuple[dict[str, float], float]:
    """({"train": acc, split: acc, ...}, C used) of a standardised multinomial logistic regression fit on
    (x_train (N, D), y_train (N,)) and scored on each of `evals`. With `c_grid`, the C of best "val" accuracy
    (the smallest of ties: the most regularised) is the one reported."""
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise ConfigError("the probe's train examples hold a single class; a classifier needs at least 2")
    scaler = StandardScaler().fit(x_train)
    # A spread below FLOAT_NOISE of the feature's magnitude is float32 rounding of a constant (a dead or saturated
    # channel, computed in batches of different sizes): left unscaled (~0 after centring), not blown up to unit
    # variance, where it would become noise the probe could fit.
    rms = np.sqrt(scaler.mean_ ** 2 + scaler.var_)
    scaler.scale_[np.sqrt(scaler.var_) <= FLOAT_NOISE * rms] = 1.0
    xs = scaler.transform(x_train)
    scaled = {name: (scaler.transform(x), y) for name, (x, y) in evals.items() if len(y)}
    best = None
    for c in sorted(c_grid or (C,)):
        clf = _fit_logistic(xs, y_train, c)
        scores = {"train": float(clf.score(xs, y_train))}
        scores.update({name: float(clf.score(x, y)) for name, (x, y) in scaled.items()})
        if best is None or scores.get("val", 0.0) > best[0].get("val", 0.0):
            best = (scores, c)
    return best


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    # lbfgs minimises the multinomial (softmax) loss for any number of classes, deterministically
    clf = LogisticRegression(C=c, max_iter=MAX_ITER, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("probe: lbfgs did not converge in %d iterations (C=%g)", MAX_ITER, c)
    return clf


def probe_features(model, features: dict, c_grid: tuple[float, ...] | None = None) -> ProbeEntry:
    """A probe per backbone depth group on `split_features` output."""
    x_train, y_train = features["train"]
    entry = ProbeEntry()
    for k, group in enumerate(model.depth_groups[:model.num_backbone_groups]):
        if x_train[k] is None:
            logger.info("probe: group %s produced no output in the forward pass; skipped", group.name)
            continue
        evals = {s: (features[s][0][k], features[s][1]) for s in EVAL_SPLITS
                 if s in features and features[s][0][k] is not None}
        scores, c = fit_probe(x_train[k], y_train, evals, c_grid)
        entry.groups.append(GroupProbe(group.name, k, int(x_train[k].shape[1]), scores["train"], scores.get("val"),
                                       scores.get("test")))
        entry.c.append(c)
        logger.info("probe: group %d %s (D=%d): train %.3f, val %s", k, group.name, x_train[k].shape[1],
                    scores["train"], _fmt(scores.get("val")))
    return entry


def probe_model(model, data, device, max_train: int = MAX_TRAIN, batch_size: int = 64,
                c_grid: tuple[float, ...] | None = None) -> tuple[ProbeEntry, dict]:
    """(probes of every backbone depth group of `model` on `data`, the split features they were fit on)."""
    model.to(device)
    features = split_features(model, probe_splits(data, max_train), data, device, batch_size)
    return probe_features(model, features, c_grid), features


def majority_baseline(features: dict) -> dict[str, float]:
    """Per split: accuracy of always predicting the train split's most frequent class (a constant feature's
    probe)."""
    y_train = features["train"][1]
    if not len(y_train):
        return {}
    majority = np.bincount(y_train).argmax()
    return {s: float((y == majority).mean()) for s, (_, y) in features.items() if len(y)}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


# ---- entry point ----------------------------------------------------------------------------------------
def probe_for(run_dir: str | Path | None = None, model_name: str | None = None, data: str | None = None,
              split: str = "val", max_train: int = MAX_TRAIN, image_size: int | None = None,
              max_length: int | None = None, batch_size: int | None = None,
              c_grid: tuple[float, ...] | None = None, cache: dict | None = None) -> ProbeResult:
    """Linear-probe accuracy per depth group.

    With `run_dir`: the pre-trained reference ("pretrained", a fresh build with the strategy's structural changes)
    and the run's selected weights ("finetuned"), on the run's data (or `data`, same classes). With `model_name`
    and `data`: the pre-trained model only. `split` is the evaluation split shown (val or test; every split is
    probed). `cache` (a comparison report's): the pre-trained model's probes, shared by the runs of one grid.
    """
    _check_options(run_dir, model_name, data, split, max_train, image_size, max_length, c_grid)
    if run_dir is not None:
        return _probe_run(run_dir, data, split, max_train, batch_size, c_grid, cache)
    return _probe_pretrained(model_name, data, split, max_train, image_size, max_length, batch_size, c_grid)


def _check_options(run_dir, model_name, data, split, max_train, image_size, max_length, c_grid) -> None:
    if (run_dir is None) == (model_name is None):
        raise ConfigError("give either a run directory (--run) or a model name (--model)")
    if model_name is not None and not data:
        raise ConfigError("--model needs --data: the data set to probe the model on")
    if run_dir is not None and (image_size is not None or max_length is not None):
        raise ConfigError("--image-size and --max-length apply with --model only: a run reads its data as it "
                          "was trained")
    if split not in EVAL_SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    if isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 2:
        raise ConfigError(f"--max-train must be an integer of at least 2, got {max_train!r}")
    if c_grid is not None:
        if not c_grid or any(not c > 0 for c in c_grid):
            raise ConfigError(f"--c-grid values must be positive numbers, got {list(c_grid)}")
        if split != "test":
            raise ConfigError("--c-grid chooses C on the val split, so its val accuracy is optimistic: "
                              "add --split test to report the test split")


def _probe_run(run_dir, data, split, max_train, batch_size, c_grid, cache) -> ProbeResult:
    from transferlab.runs import load_run
    from transferlab.training.trainer import resolve_device

    config, bundle, model, strategy = load_run(run_dir, data, augment=False)  # images as evaluated
    split_of(bundle, split)  # no test split: one line before any forward pass
    device = resolve_device(config.train.device, fallback=True)
    bs = batch_size or config.train.eval_batch_size
    entries, note = {}, ""
    if has_reproducible_start(config.model, config.weights):
        reference = reference_model(config, strategy)
        key = pretrained_key("probe", config, data or config.data, split, bs, max_train, c_grid,
                             tuple(n for n, _ in reference.named_parameters()))
        if cache is not None and key in cache:
            entries["pretrained"] = cache[key]
        else:
            logger.info("probe: the pre-trained model")
            entries["pretrained"], _ = probe_model(reference, bundle, device, max_train, bs, c_grid)
            if cache is not None:
                cache[key] = entries["pretrained"]
        del reference
    else:
        note = (f"{config.model} was fine-tuned from a random initialisation (no --weights): there is no "
                f"pre-trained model to probe")
        logger.warning(note)
    logger.info("probe: the fine-tuned model of %s", run_dir)
    entries["finetuned"], features = probe_model(model, bundle, device, max_train, bs, c_grid)
    return ProbeResult(source=str(run_dir), data=str(config.data), split=split,
                       examples=_examples(bundle, features), estimator=describe_estimator(c_grid),
                       majority_baseline=majority_baseline(features), entries=entries, note=note)


def _probe_pretrained(model_name, data, split, max_train, image_size, max_length, batch_size,
                      c_grid) -> ProbeResult:
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig, prepare
    from transferlab.training.trainer import resolve_device

    # as bn_shift_for: a linear_probe config builds the pre-trained backbone (its random new head is not probed)
    config = RunConfig(model=model_name, data=data, strategy="linear_probe",
                       data_options=DataOptions(image_size=image_size, max_length=max_length))
    bundle, model, _ = prepare(config)
    split_of(bundle, split)
    entry, features = probe_model(model, bundle, resolve_device("auto"), max_train, batch_size or 64, c_grid)
    return ProbeResult(source=model_name, data=str(data), split=split, examples=_examples(bundle, features),
                       estimator=describe_estimator(c_grid), majority_baseline=majority_baseline(features),
                       entries={"pretrained": entry})


def _examples(bundle, features: dict) -> dict:
    """Examples the probes saw per split (unreadable images are dropped by the loader)."""
    out = {"train": int(len(features["train"][1])), "train_available": len(bundle.train)}
    for s in EVAL_SPLITS:
        out[s] = int(len(features[s][1])) if s in features else None
    return out


# ---- figure and report section --------------------------------------------------------------------------
def accuracy_of(group: GroupProbe, split: str) -> float | None:
    return {"train": group.train_accuracy, "val": group.val_accuracy, "test": group.test_accuracy}[split]


def plot_probe(result: ProbeResult, path: str | Path) -> Path:
    """Probe accuracy on the evaluation split by depth group, one line per entry (train accuracy dotted); the
    majority-class rate as a grey line; saved as PNG."""
    from transferlab.figures import new_figure

    fig, ax = new_figure(figsize=(8, 4))
    _draw(ax, result.entries, result.split, train=True)
    baseline = result.majority_baseline.get(result.split)
    if baseline is not None:
        ax.axhline(baseline, color="grey", lw=0.8, ls=":", label=f"majority class ({baseline:.2f})")
    ax.set_title(f"Linear probes by depth: {result.source} on {result.data}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _draw(ax, entries: dict[str, ProbeEntry], split: str, train: bool = False) -> None:
    ticks: dict[int, str] = {}
    for label, entry in entries.items():
        xs = [g.index for g in entry.groups]
        line, = ax.plot(xs, [_nan(accuracy_of(g, split)) for g in entry.groups], marker="o",
                        label=f"{label} ({split})")
        if train:
            ax.plot(xs, [g.train_accuracy for g in entry.groups], ls=":", color=line.get_color(), alpha=0.7,
                    label=f"{label} (train)")
        ticks.update({g.index: g.name for g in entry.groups})
    if ticks:
        ax.set_xticks(sorted(ticks), [ticks[i] for i in sorted(ticks)], rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("depth group (input side -> output side)")
    ax.set_ylabel("probe accuracy")  # the legend names the split
    ax.set_ylim(0, 1.02)


def _nan(x) -> float:
    return float("nan") if x is None else x


def probe_section(ctx) -> Section | None:
    from transferlab.diagnostics._common import figure_png, first_finished_runs
    from transferlab.figures import new_figure

    title = "Linear probes by depth"
    results, notes = {}, []
    for name, run_dir in first_finished_runs(ctx, "probe"):
        try:
            results[name] = probe_for(run_dir, max_train=REPORT_MAX_TRAIN, cache=ctx.cache)
        except Exception as exc:  # noqa: BLE001  a diagnostic must not sink the report
            notes.append(f"{name}: not computed ({type(exc).__name__}: {exc})")
            continue
        if results[name].note:
            notes.append(f"{name}: {results[name].note}")
    if not results:
        return Section(title, [Text("Not computed: " + ("; ".join(notes) or "no finished runs"))])
    pretrained = next((r.entries["pretrained"] for r in results.values() if "pretrained" in r.entries), None)
    lines = ({"pre-trained": pretrained} if pretrained else {}) | \
        {name: r.entries["finetuned"] for name, r in results.items()}
    fig, ax = new_figure(figsize=(8, 3.5))
    _draw(ax, lines, "val")
    ax.legend(fontsize=8)
    deepest = max(lines.values(), key=lambda e: len(e.groups))
    rows = [[g.name] + [_fmt(_at(e, g.index)) for e in lines.values()] for g in deepest.groups]
    first = next(iter(results.values()))
    blocks = [Figure("probe", figure_png(fig), f"Validation accuracy of a linear probe (logistic regression, C = {C}) "
                     f"on each depth group's mean-pooled output, fit on at most {REPORT_MAX_TRAIN} training "
                     f"examples: where the target classes become linearly readable, in the pre-trained model "
                     f"and after fine-tuning (first seed of each strategy)."),
              Table(["depth group"] + list(lines), rows, css_class="small"),
              Text(f"{first.examples['train']} train and {first.examples['val']} validation examples; "
                   f"always predicting the most frequent class scores "
                   f"{first.majority_baseline.get('val', float('nan')):.3f} on validation.")]
    if notes:
        blocks.append(Bullets(notes))
    return Section(title, blocks, data={name: r.to_dict() for name, r in results.items()} | {"notes": notes})


def _at(entry: ProbeEntry, index: int) -> float | None:
    return next((g.val_accuracy for g in entry.groups if g.index == index), None)


# ---- the command (transferlab.diagnostics.registry) ------------------------------------------------------
@register_diagnostic(
    "probe", order=50, help="per depth group: accuracy of a linear probe (logistic regression) on its output, "
                            "pre-trained vs fine-tuned",
    arguments=[
        one_of(arg("--run", help="run directory: probes its pre-trained reference and its selected weights"),
               arg("--model", help="a pre-trained model by name (needs --data): probes it alone"), required=True),
        arg("--data", help="data to probe on (with --run: default the run's own; same classes)"),
        arg("--split", choices=["val", "test"], default="val",
            help="evaluation split shown in the table and the plot (every split is probed)"),
        arg("--max-train", type=int, default=MAX_TRAIN,
            help=f"fit each probe on at most this many training examples, a stratified subset "
                 f"(default: {MAX_TRAIN})"),
        arg("--image-size", type=int, help="with --model: input size (default: the model's)"),
        arg("--max-length", type=int, help="with --model on text: truncate to this many tokens"),
        arg("--batch-size", type=int, help="forward-pass batch size (default: the run's eval batch size, "
                                           "or 64)"),
        arg("--c-grid", metavar="C,C,...", help="choose the probe's C per group from these by val "
                                                 "accuracy (needs --split test; default: C = 1)"),
        arg("--plot", metavar="FILE.png", help="write probe accuracy by depth group as a PNG"),
        arg("--json", action="store_true",
            help='print {"entries": {label: {"groups": [{"name", "index", "dim", "train_accuracy", '
                 '"val_accuracy", "test_accuracy"}]}}, "examples", "estimator"}'),
    ],
    section=section("probe", order=70, build=probe_section))
def cmd_probe(args) -> None:
    from transferlab.console import print_json
    from transferlab.outputs import check_plot_path

    plot = check_plot_path(args.plot, inputs={"--data": args.data, "--run": args.run})  # before the work
    result = probe_for(args.run, args.model, args.data, split=args.split, max_train=args.max_train,
                       image_size=args.image_size, max_length=args.max_length, batch_size=args.batch_size,
                       c_grid=_c_grid(args.c_grid))
    if plot:
        plot_probe(result, plot)
    if args.json:
        print_json(result.to_dict())
        return
    _print_table(result)


def _print_table(result) -> None:
    from transferlab.console import format_number, print_table

    labels = list(result.entries)
    headers = ["group", "dim"] + [f"{label} {s}" for label in labels for s in ("train", result.split)]
    deepest = max(result.entries.values(), key=lambda e: len(e.groups)).groups
    rows = []
    for g in deepest:
        row = [g.name, str(g.dim)]
        for label in labels:
            mine = next((x for x in result.entries[label].groups if x.index == g.index), None)
            row += ["-", "-"] if mine is None else [format_number(mine.train_accuracy, ".3f"),
                                                    format_number(accuracy_of(mine, result.split), ".3f")]
        rows.append(row)
    if result.note:
        print(f"note: {result.note}")
    print_table([headers] + rows)
    ex = result.examples
    baseline = result.majority_baseline.get(result.split)
    print(f"({ex['train']} of {ex['train_available']} train and {ex[result.split]} {result.split} examples of "
          f"{result.data}; majority class {format_number(baseline, '.3f')} on {result.split}; {result.estimator})")


def _c_grid(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    from transferlab.errors import ConfigError

    try:
        return tuple(float(c) for c in text.split(","))
    except ValueError:
        raise ConfigError(f"--c-grid: expected comma-separated numbers like 0.1,1,10, got {text!r}") from None
