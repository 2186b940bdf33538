"""The domain gap per depth group: the proxy A-distance (Ben-David et al. 2010; Ganin et al. 2016).

For each depth group of a run's model, the group's pooled outputs (`_common.GroupOutputs`: spatial maps and
token states mean-pooled to (B, D)) on up to `max_examples` examples of the source data and as many of the target
data are labelled by domain, and a linear domain classifier (sklearn LogisticRegression on standardised features)
is cross-validated with stratified folds. With err its held-out error, d_A = 2 (1 - 2 err): 0 when the domains
cannot be told apart from the features, 2 when they are linearly separable. err above 0.5 (chance, by noise)
gives a slightly negative d_A, which is reported as it is. Labels of either data set are not read.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from transferlab.diagnostics._common import GroupOutputs, split_of, target_batches
from transferlab.diagnostics.registry import arg, at_least_one, register_diagnostic, section
from transferlab.errors import ConfigError
from transferlab.sections import Bullets, Section, Table, Text

FOLDS = 5
MIN_PER_DOMAIN = FOLDS  # stratified folds need at least one example of each domain per fold


@dataclass
class GroupGap:
    name: str
    features: int
    error: float  # mean held-out error of the domain classifier over the folds
    a_distance: float  # 2 (1 - 2 error)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DomainGapResult:
    run: str
    source_data: str
    target_data: str
    split: str
    examples: int  # per domain
    folds: int
    groups: list

    def to_dict(self) -> dict:
        return {**asdict(self), "groups": [g.to_dict() if hasattr(g, "to_dict") else g for g in self.groups]}


def proxy_a_distance(source: np.ndarray, target: np.ndarray, folds: int = FOLDS, seed: int = 0,
                     max_iter: int = 2000) -> tuple[float, float]:
    """(d_A, held-out error) of a linear classifier telling `source` (n, D) from `target` (m, D) rows, by
    stratified `folds`-fold cross-validation (standardisation fitted on each training fold only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if min(len(source), len(target)) < folds:
        raise ConfigError(f"the proxy A-distance needs at least {folds} examples of each domain, got "
                          f"{len(source)} and {len(target)}")
    X = np.concatenate([source, target]).astype(np.float64)
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    error = 1.0 - float(np.mean(cross_val_score(clf, X, y, cv=cv, scoring="accuracy")))
    return 2.0 * (1.0 - 2.0 * error), error


@torch.no_grad()
def _group_features(model, examples, max_examples: int, batch_size: int, device) -> list[np.ndarray]:
    from transferlab.training.evaluate import ordered_loader

    hooks = GroupOutputs(model)
    parts: list[list[torch.Tensor]] = [[] for _ in model.depth_groups]
    n = 0
    try:
        dataset, collate = examples
        for batch in target_batches(ordered_loader(dataset, batch_size, collate), device):
            batch = {k: v for k, v in batch.items() if k != "labels"}  # domains only: labels unread
            outputs = hooks.run(model, batch)
            take = min(max_examples - n, len(next(o for o in outputs if o is not None)))
            for i, o in enumerate(outputs):
                if o is not None:
                    parts[i].append(o[:take].float().cpu())
            n += take
            if n >= max_examples:
                break
    finally:
        hooks.close()
    return [torch.cat(p).numpy() if p else None for p in parts]


def domain_gap_for(run_dir: str | Path, source_data: str, target_data: str, split: str = "val",
                   max_examples: int = 500, batch_size: int = 64, seed: int = 0) -> DomainGapResult:
    """The proxy A-distance per depth group between `source_data` and `target_data` in a run's model."""
    from transferlab.data import DataOptions, is_flat_image_folder, load_data, load_unlabelled
    from transferlab.runs import load_run_model
    from transferlab.training.trainer import resolve_device

    config, model, _ = load_run_model(run_dir)  # the two data sets may have other classes than the run
    opts = DataOptions(**{**config.data_options.__dict__, "augment": False, "max_val": None})

    def examples(path: str) -> tuple:
        """(dataset, collate): the split `split`, or all of a flat folder of images (it has no splits)."""
        if is_flat_image_folder(path):
            return load_unlabelled(path, model.cfg, opts)
        data = load_data(path, model.cfg, opts, tokenizer=model.tokenizer)
        return split_of(data, split), data.collate

    source, target = examples(source_data), examples(target_data)
    device = resolve_device(config.train.device, fallback=True)
    model.to(device).eval()
    feats_s = _group_features(model, source, max_examples, batch_size, device)
    feats_t = _group_features(model, target, max_examples, batch_size, device)
    n = min(len(next(f for f in feats_s if f is not None)), len(next(f for f in feats_t if f is not None)))
    groups = []
    for g, fs, ft in zip(model.depth_groups, feats_s, feats_t):
        if fs is None or ft is None:
            continue
        d_a, err = proxy_a_distance(fs[:n], ft[:n], seed=seed)
        groups.append(GroupGap(name=g.name, features=int(fs.shape[1]), error=err, a_distance=d_a))
    return DomainGapResult(run=str(run_dir), source_data=str(source_data), target_data=str(target_data),
                           split=split, examples=n, folds=FOLDS, groups=groups)


# ---- the command and the report section (transferlab.diagnostics.registry) ---------------------------------
def domain_gap_section(ctx) -> Section | None:
    """Per strategy (first finished seed): the proxy A-distance per depth group between the report's
    `--source-data` and the grid's data, and between the grid's data and its `--target-data` (a domain adaptation
    strategy beside `full` shows what adaptation did to the gap); nothing without either."""
    from transferlab.diagnostics._common import first_finished_runs

    r = ctx.results
    pairs = []  # (what is compared, first data, second data)
    if getattr(ctx, "source_data", None):
        pairs.append(("source data vs the grid's data", ctx.source_data, r.data))
    if r.target_data:
        pairs.append(("the grid's data vs its target data", r.data, r.target_data))
    if not pairs:
        return None
    rows, data, notes = [], {}, []
    for name, run_dir in first_finished_runs(ctx, "domain_gap"):
        for label, first, second in pairs:
            try:
                gap = domain_gap_for(run_dir, first, second, max_examples=200)
            except Exception as exc:  # noqa: BLE001 - one run's failure is a note, not a failed report
                notes.append(f"{name}, {label}: not computed ({type(exc).__name__}: {exc})")
                continue
            data.setdefault(name, {})[label] = gap.to_dict()
            rows.append([name, label, ", ".join(f"{g.name} {g.a_distance:.2f}" for g in gap.groups)])
    if not rows and not notes:
        return None
    blocks = [Table(["strategy", "between", "proxy A-distance per depth group"], rows),
              Text("d_A = 2 (1 - 2 err), err the cross-validated error of a linear domain classifier on each depth "
                   "group's pooled outputs (200 examples of each side, labels unread): 0 = indistinguishable, 2 = "
                   "separable. A strategy that adapts to the target should leave a smaller gap in its last groups "
                   "than `full` does.")]
    if notes:
        blocks.append(Bullets(notes))
    return Section("Domain gap (proxy A-distance)", blocks, data=data | {"notes": notes})


@register_diagnostic(
    "domain-gap", order=75, help="proxy A-distance per depth group between source and target data",
    arguments=[
        arg("--run", required=True, help="run directory (its selected weights)"),
        arg("--source-data", required=True),
        arg("--target-data", required=True),
        arg("--split", choices=["val", "test", "train"], default="val"),
        arg("--max-examples", type=at_least_one, default=500, help="examples per domain (default 500)"),
        arg("--json", action="store_true"),
    ],
    section=section("domain_gap", order=72, build=domain_gap_section))
def cmd_domain_gap(args) -> None:
    from transferlab.console import print_json, print_table

    r = domain_gap_for(args.run, args.source_data, args.target_data, split=args.split,
                       max_examples=args.max_examples)
    if args.json:
        print_json(r.to_dict())
        return
    print_table([["group", "features", "held-out error", "proxy A-distance"]] +
                [[g.name, str(g.features), f"{g.error:.3f}", f"{g.a_distance:.3f}"] for g in r.groups])
    print(f"{r.examples} {r.split} examples per domain, {r.folds}-fold stratified cross-validation")
