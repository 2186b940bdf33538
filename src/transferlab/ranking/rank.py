"""Rank candidate pre-trained models (or one model's depth groups) for a target data set, before any fine-tuning.

    candidates = parse_candidates("efficientnet_lite0,resnet18")
    result = rank_models(candidates, "path/to/images", RankOptions(max_examples=1000))
    result.to_dict()          # per candidate: scores, ranks, features' shape, forward and metric times, memory

Every candidate sees the same examples: a stratified, seeded subsample (`stratified_subset`, --seed) of the target's
training split (never its validation or test split, which stay for judging the fine-tuned model). Each candidate is
built first (a name that cannot be built fails the whole request, before any forward pass), then run once over the
examples (`features.extract`), then scored by each metric (`registry`). A candidate is a model name as `finetune
--model` takes it, optionally with a state-dict file: `NAME@FILE` (FILE an existing file; `RUN@E`, `RUN@last` and
`RUN@scratch` stay `pretrain` checkpoints).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from transferlab.errors import ConfigError
from transferlab.ranking.features import extract
from transferlab.ranking.registry import Metric, MetricInput, MetricOptions, Skipped, parse_metrics

logger = logging.getLogger(__name__)

RANKING_FORMAT = "transferlab-ranking-1"
DEFAULT_MAX_EXAMPLES = 1000
_CHECKPOINT_SUFFIX = ("last", "scratch")


@dataclass(frozen=True)
class Candidate:
    """A model to rank: `model` as create_model takes it, `weights` a state-dict file or None."""

    name: str  # as the user wrote it
    model: str
    weights: str | None = None


def parse_candidates(text: str) -> list[Candidate]:
    """`--models A,B@FILE,RUN@3`: the candidates, in order. `NAME@FILE` gives NAME the weights in FILE (an existing
    file); any other `@` is left to the model families (RUN@E: a kept `pretrain` epoch)."""
    names = [n.strip() for n in str(text).split(",")]
    if not names or any(not n for n in names):
        raise ConfigError(f"--models {text!r}: give comma-separated model names, e.g. efficientnet_lite0,resnet18")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--models names {', '.join(repeated)} more than once")
    out = []
    for name in names:
        model, sep, rest = name.rpartition("@")
        if sep and model and not (rest.isdigit() or rest in _CHECKPOINT_SUFFIX) and Path(rest).expanduser().is_file():
            out.append(Candidate(name, model, str(Path(rest).expanduser())))
        else:
            out.append(Candidate(name, name, None))
    return out


@dataclass
class RankOptions:
    """What `transferlab rank` reads and how; every field has a default and a help text."""

    metrics: str | None = field(default=None, metadata={
        "help": "comma-separated metrics (default: all: logme,leep,nce,hscore,knn,linear)"})
    max_examples: int = field(default=DEFAULT_MAX_EXAMPLES, metadata={
        "help": "training examples each candidate is run on: a stratified, seeded subsample of the training split"})
    layers: bool = field(default=False, metadata={
        "help": "rank the depth groups of ONE model (which layer to transfer from) instead of models"})
    batch_size: int = field(default=64, metadata={"help": "examples per forward pass"})
    image_size: int | None = field(default=None, metadata={
        "help": "image side fed to every candidate (default: each model's own input size)"})
    classes: str | None = field(default=None, metadata={"help": "comma-separated class names to keep"})
    val_fraction: float = field(default=0.2, metadata={
        "help": "held out as the validation split (never ranked on) where the data set has none"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda, cuda:N"})
    metric: MetricOptions = field(default_factory=MetricOptions)

    def __post_init__(self) -> None:
        for name in ("max_examples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")


@dataclass
class MetricResult:
    score: float | None  # None: skipped
    rank: int | None  # 1 = best; ties share the better rank
    seconds: float
    note: str = ""  # why it was skipped
    correct: list[int] | None = None  # accuracy metrics: per example 0/1 (for McNemar between candidates)


@dataclass
class CandidateResult:
    name: str  # the candidate as written, or MODEL/GROUP with --layers
    model: str
    weights: str | None
    group: str | None  # the depth group with --layers
    features_shape: list[int]  # [N, D]
    source_classes: int | None  # the source head's classes; None without one
    forward_seconds: float
    peak_memory_mb: float
    metrics: dict[str, MetricResult] = field(default_factory=dict)

    @property
    def metric_seconds(self) -> float:
        return sum(m.seconds for m in self.metrics.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metric_seconds"] = {k: m.seconds for k, m in self.metrics.items()}
        d["total_seconds"] = self.forward_seconds + self.metric_seconds
        d["scores"] = {k: m.score for k, m in self.metrics.items()}
        d["ranks"] = {k: m.rank for k, m in self.metrics.items()}
        d["notes"] = {k: m.note for k, m in self.metrics.items() if m.note}
        return d


@dataclass
class RankingResult:
    data: str
    split: str
    examples: int  # ranked on
    examples_available: int  # in the training split
    classes: list[str]
    seed: int
    layers: bool
    device: str
    metrics: list[dict]  # name, paper, help of each metric asked for, in order
    candidates: list[CandidateResult]
    options: dict

    def ranking(self, metric: str) -> list[CandidateResult]:
        """Candidates by that metric's rank (skipped ones last, in input order)."""
        return sorted(self.candidates, key=lambda c: (c.metrics[metric].rank is None, c.metrics[metric].rank or 0))

    def to_dict(self) -> dict:
        return {"format": RANKING_FORMAT, "data": self.data, "split": self.split, "examples": self.examples,
                "examples_available": self.examples_available, "classes": self.classes, "seed": self.seed,
                "layers": self.layers, "device": self.device, "metrics": self.metrics, "options": self.options,
                "candidates": [c.to_dict() for c in self.candidates],
                "rankings": {m["name"]: [c.name for c in self.ranking(m["name"])
                                         if c.metrics[m["name"]].rank is not None] for m in self.metrics}}


def assign_ranks(scores: list[float | None]) -> list[int | None]:
    """Rank 1 for the highest score; equal scores share the better rank ("1, 1, 3"); None stays None."""
    present = [s for s in scores if s is not None]
    return [None if s is None else 1 + sum(other > s for other in present) for s in scores]


# ---- checks before any forward pass ----------------------------------------------------------------------------
def check_request(candidates: list[Candidate], options: RankOptions) -> list[Metric]:
    """The metrics asked for; ConfigError (one line) for an unknown metric or --layers with several models."""
    metrics = parse_metrics(options.metrics)
    if options.layers and len(candidates) != 1:
        raise ConfigError(f"--layers ranks the depth groups of ONE model; --models names {len(candidates)} "
                          f"({', '.join(c.name for c in candidates)})")
    return metrics


def candidate_cfg(candidate: Candidate, image_size: int | None):
    """The candidate's input config, or ConfigError naming it and why it cannot be built."""
    from transferlab.models import model_cfg
    from transferlab.models._factory import check_input_size

    try:
        cfg = model_cfg(candidate.model, candidate.weights)
        check_input_size(candidate.model, candidate.weights, image_size)
    except Exception as exc:  # noqa: BLE001  (any reason a name cannot be built is reported as one line)
        raise ConfigError(f"candidate {candidate.name!r} cannot be built: {_reason(exc)}") from None
    return cfg


def build_candidate(candidate: Candidate, num_classes: int, seed: int):
    """The candidate's TransferModel; a random init is drawn from `seed` alone (the same model on every call)."""
    from transferlab.models import create_model

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return create_model(candidate.model, num_classes, weights=candidate.weights)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"candidate {candidate.name!r} cannot be built: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _tokenizer(model_name: str):
    from transformers import AutoTokenizer

    from transferlab.models._families import tokenizer_source

    return AutoTokenizer.from_pretrained(tokenizer_source(model_name) or model_name)


def _load(data: str, cfg, options: RankOptions, tokenizer=None):
    from transferlab.data import DataOptions, load_data

    data_options = DataOptions(val_fraction=options.val_fraction, seed=options.metric.seed,
                               image_size=options.image_size, classes=options.classes)
    return load_data(data, cfg, data_options, tokenizer=tokenizer)


def sample(bundle, max_examples: int, seed: int):
    """The training split's stratified, seeded subsample of `max_examples` (all when it holds fewer)."""
    from transferlab.data._split import stratified_subset

    train = bundle.train
    if max_examples < bundle.num_classes:
        raise ConfigError(f"--max-examples {max_examples} is smaller than the number of classes "
                          f"({bundle.num_classes}); use at least {bundle.num_classes}")
    return train.subset(stratified_subset(train.targets, max_examples, seed, option="--max-examples"))


# ---- the ranking ---------------------------------------------------------------------------------------------
def rank_models(candidates: list[Candidate], data: str, options: RankOptions | None = None) -> RankingResult:
    """Every candidate's scores by every metric asked for, and the rank per metric (see the module docstring)."""
    from transferlab.training.trainer import resolve_device

    options = options or RankOptions()
    metrics = check_request(candidates, options)
    device = resolve_device(options.device)
    cfgs = [candidate_cfg(c, options.image_size) for c in candidates]
    first = _load(data, cfgs[0], options, _tokenizer(candidates[0].model) if cfgs[0].modality == "text" else None)
    sample(first, options.max_examples, options.metric.seed)  # --max-examples < classes: refused before building
    models = [build_candidate(c, first.num_classes, options.metric.seed) for c in candidates]
    results: list[CandidateResult] = []
    labels_seen: np.ndarray | None = None
    bundles: dict[str, object] = {}
    n_available = len(first.train)
    for i, (candidate, cfg) in enumerate(zip(candidates, cfgs)):
        model, models[i] = models[i], None  # freed after its pass
        key = repr((cfg.modality, cfg.input_size, cfg.mean, cfg.std, cfg.interpolation, cfg.crop_pct,
                    getattr(cfg, "max_length", None), candidate.model if cfg.modality == "text" else None))
        if key not in bundles:
            bundles[key] = first if i == 0 else _load(data, cfg, options, model.tokenizer)
        bundle = bundles[key]
        if list(bundle.classes) != list(first.classes):
            raise ConfigError(f"{data}: candidate {candidate.name!r} reads classes {bundle.classes}, the first "
                              f"reads {first.classes}")
        subset = sample(bundle, options.max_examples, options.metric.seed)
        logger.info("rank: %s: forward pass over %d examples on %s", candidate.name, len(subset), device)
        out = extract(model, bundle, subset, device, options.batch_size, layers=options.layers)
        if labels_seen is not None and not np.array_equal(labels_seen, out.labels):
            raise ConfigError(f"candidate {candidate.name!r} read other examples than the first candidate "
                              "(an image that failed to decode for one model only?)")
        labels_seen = out.labels
        source_classes = None if model.source_head is None else int(model.source_head.out_features)
        for group, feats in out.features.items():
            row = CandidateResult(
                name=f"{candidate.name}/{group}" if options.layers else candidate.name, model=candidate.model,
                weights=candidate.weights, group=group if options.layers else None, features_shape=list(feats.shape),
                source_classes=source_classes, forward_seconds=out.forward_seconds,
                peak_memory_mb=out.peak_memory_mb)
            probs = None if options.layers else out.source_probs
            for metric in metrics:
                row.metrics[metric.name] = _score(metric, MetricInput(feats, out.labels, probs, options.metric),
                                                  options.layers, row.name)
            results.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for metric in metrics:
        ranks = assign_ranks([r.metrics[metric.name].score for r in results])
        for r, rank in zip(results, ranks):
            r.metrics[metric.name].rank = rank
    return RankingResult(
        data=str(data), split="train", examples=int(labels_seen.size if labels_seen is not None else 0),
        examples_available=n_available, classes=list(first.classes), seed=options.metric.seed,
        layers=options.layers, device=str(device),
        metrics=[{"name": m.name, "paper": m.paper, "help": m.help, "needs_source": m.needs_source,
                  "accuracy": m.accuracy} for m in metrics],
        candidates=results, options=_options_dict(options))


def _score(metric: Metric, inputs: MetricInput, layers: bool, name: str) -> MetricResult:
    if metric.needs_source and layers:
        return MetricResult(None, None, 0.0, "per layer: a source head reads only the model's last features")
    start = time.perf_counter()
    try:
        score = metric.score(inputs)
    except Skipped as why:
        return MetricResult(None, None, time.perf_counter() - start, str(why))
    seconds = time.perf_counter() - start
    value = float(score.value)
    if not math.isfinite(value):
        return MetricResult(None, None, seconds, f"not finite ({value})")
    logger.info("rank: %s: %s = %.4f (%.2fs)", name, metric.name, value, seconds)
    correct = None if score.correct is None else [int(c) for c in np.asarray(score.correct).ravel()]
    return MetricResult(value, None, seconds, "", correct)


def _options_dict(options: RankOptions) -> dict:
    d = asdict(options)
    d.update(d.pop("metric"))
    return d
