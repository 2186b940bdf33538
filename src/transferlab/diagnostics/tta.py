"""Test-time adaptation of a run to shifted, unlabelled data: AdaBN and TENT.

- **AdaBN** (Li et al. 2016): re-estimate every BatchNorm layer's statistics on the shifted images
  (`adabn.adapt_batchnorm`, cumulative average); no weight changes.
- **TENT** (Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021): minimise the
  mean Shannon entropy of the model's softmax predictions, updating ONLY the BatchNorm affine parameters (weight,
  bias); the BatchNorm layers normalise with the current batch's statistics (train mode, running statistics
  neither used nor updated); every other layer is as deployed (eval mode), every other parameter frozen. Adam,
  lr 1e-3, betas (0.9, 0.999), no weight decay: the paper's CIFAR-10-C setting. Batches in stream order.
  *online*: for each batch, `steps` updates on it, then its predictions; *offline*: `steps` passes over the
  unlabelled data, then predictions; `reset` (episodic, online only): the source weights and a fresh optimiser
  before each batch. A batch of one example is not adapted on and is predicted with the running statistics.

Labels are never read for adaptation: every batch loses its "labels" before it reaches the model, and only the
before/after accuracies read them. `adapt_run` writes an adapted run (the source run is only read); its stream is the split in a seeded random
order (TENT assumes batches that mix the classes, as CIFAR-10-C's arrays do; a folder read in order does not).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab.diagnostics.bn import batchnorm_layers
from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

METHODS = ("adabn", "tent")
NO_BN = ("the model has no BatchNorm layers: neither tent (it trains only their affine parameters) nor adabn (it "
         "re-estimates their statistics) can adapt it; fine-tune it with labels instead")


@dataclass
class TentConfig:
    steps: int = field(default=1, metadata={"help": "updates per batch (online) or passes over the data (offline)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (the paper's CIFAR-10-C setting)"})
    online: bool = field(default=False, metadata={"help": "adapt on each batch, then predict it"})
    reset: bool = field(default=False, metadata={"help": "restore the source weights before each batch (online)"})

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"--steps must be an integer >= 1, got {self.steps!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr!r}")
        if self.reset and not self.online:
            raise ConfigError("--reset restores the source weights after each batch: it needs --online (offline, "
                              "the adapted weights would be the source's)")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-example Shannon entropy (nats) of softmax(logits): (B, C) -> (B,)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def bn_affine_parameters(model) -> list[torch.nn.Parameter]:
    return [p for _, bn in batchnorm_layers(model) for p in (bn.weight, bn.bias) if p is not None]


def configure_tent(model) -> list[torch.nn.Parameter]:
    """The model as TENT adapts it; returns the parameters it trains (BatchNorm weight and bias)."""
    layers = batchnorm_layers(model)
    params = bn_affine_parameters(model)
    if not layers or not params:
        raise ConfigError(NO_BN if not layers else "the model's BatchNorm layers have no affine parameters for "
                                                   "tent to train; use --method adabn")
    model.eval()
    model.requires_grad_(False)
    for _, bn in layers:
        bn.train()
        bn.track_running_stats = False  # normalise with the batch's statistics; running ones kept, not updated
    for p in params:
        p.requires_grad_(True)
    return params


def release_tent(model) -> None:
    for _, bn in batchnorm_layers(model):
        bn.track_running_stats = True
    model.eval()


def _unlabelled(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def _size(batch: dict) -> int:
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return first.shape[0]


@dataclass
class TentOutcome:
    logits: list  # per batch (B, C) float tensors, in stream order: the predictions TENT's protocol gives
    entropy: list  # offline: the mean entropy of each pass (before its updates); online: of each batch
    updates: int


def tent_adapt(model, batches: list[dict], config: TentConfig) -> TentOutcome:
    """Run TENT over `batches` (dicts already on the model's device; "labels" are dropped unread)."""
    batches = [_unlabelled(b) for b in batches]
    params = configure_tent(model)
    source = copy.deepcopy(model.state_dict())

    def optimiser():
        return torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=0.0)

    opt = optimiser()
    updates = 0

    def step(batch) -> float:
        nonlocal updates
        loss = entropy(model(batch).float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        updates += 1
        return float(loss.detach())

    def predict(batch) -> torch.Tensor:
        with torch.no_grad():
            if _size(batch) < 2:  # batch statistics of one example are undefined: the running ones
                release_tent(model)
                out = model(batch).float()
                configure_tent(model)
                return out
            return model(batch).float()

    logits, history = [], []
    try:
        if config.online:
            for batch in batches:
                if config.reset:
                    model.load_state_dict(source)
                    opt = optimiser()
                if _size(batch) >= 2:
                    losses = [step(batch) for _ in range(config.steps)]
                    history.append(losses[0])
                logits.append(predict(batch))
        else:
            for _ in range(config.steps):
                losses = [step(b) for b in batches if _size(b) >= 2]
                history.append(sum(losses) / max(len(losses), 1))
            logits = [predict(b) for b in batches]
    finally:
        release_tent(model)
        model.requires_grad_(True)
    return TentOutcome(logits=[x.cpu() for x in logits], entropy=history, updates=updates)


@dataclass
class AdaptResult:
    run: str
    out: str
    data: str
    split: str
    method: str
    settings: dict
    examples: int
    # None for a stream without labels (a flat folder of images): then only the entropies tell what changed
    accuracy_before: float | None  # the source run, as deployed, on the split
    accuracy_after: float | None  # the method's own predictions (TENT: batch statistics; AdaBN: the adapted model)
    accuracy_saved: float | None  # the written run in eval mode (`transferlab evaluate --run OUT --split SPLIT`)
    entropy_before: float  # mean prediction entropy (nats) before and after
    entropy_after: float
    entropy_history: list
    seed: int = 0  # the stream's order
    # per example of the split, in the split's order (not the stream's): 1 where the prediction was right; what
    # paired statistics over the same examples read (empty when examples were dropped as unreadable)
    correct_before: list = field(default_factory=list)
    correct_after: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _accuracy(logits: list, labels: list) -> float | None:
    if not labels:
        return None
    pred = torch.cat(logits).argmax(1)
    return float((pred == torch.cat(labels)).float().mean())


def _correct_in_split_order(logits: list, labels: list, order: list[int]) -> list[int]:
    """1/0 per example, moved from the stream's order back to the split's; [] when the counts differ or there
    are no labels."""
    if not labels:
        return []
    hit = (torch.cat(logits).argmax(1) == torch.cat(labels)).int()
    if len(hit) != len(order):
        return []
    out = torch.empty_like(hit)
    out[torch.tensor(order)] = hit  # stream position p holds split example order[p]
    return out.tolist()


@torch.no_grad()
def _eval_logits(model, batches) -> list:
    model.eval()
    return [model(_unlabelled(b)).float().cpu() for b in batches]


def adapt_run(run_dir: str | Path, data_path: str, out: str | Path, method: str = "tent", split: str = "val",
              tent: TentConfig | None = None, batch_size: int | None = None, overwrite: bool = False,
              seed: int = 0) -> AdaptResult:
    """Adapt a run to `data_path` (same classes, labels unused; or a flat folder of images without labels, all of
    it the stream and no accuracy measured) by `method`; write the adapted run to `out`.

    `out` gets the run's config.json (data set to `data_path`), checkpoint/best.safetensors and adapt.json (this
    result). The split `split` of `data_path` is both the unlabelled stream adapted on and the one scored: the
    accuracies before and after are on the same examples, in the same order."""
    from transferlab.data import is_flat_image_folder, load_data, load_unlabelled
    from transferlab.data._digits import is_digits_spec
    from transferlab.diagnostics._common import split_of
    from transferlab.diagnostics.adabn import adapt_batchnorm, write_adapted_run
    from transferlab.outputs import RUN_FOLDER, check_output_path, require_writable
    from transferlab.runs import load_run, load_run_model
    from transferlab.safe_io import atomic_write_json
    from transferlab.training.evaluate import ordered_loader, to_device
    from transferlab.training.trainer import resolve_device
    from torch.utils.data import Subset

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: choose from {', '.join(METHODS)}")
    if method == "adabn" and tent is not None and tent != TentConfig():
        raise ConfigError("--steps, --lr, --online and --reset are tent's settings; adabn has none")
    tent = tent or TentConfig()
    run_dir = Path(run_dir)
    if data_path is None or not str(data_path).strip():
        raise ConfigError("--data is empty (an unset shell variable?): give the shifted data")
    out = check_output_path(out, "--out", {"--run": run_dir,
                                            "--data": None if is_digits_spec(str(data_path)) else data_path})
    require_writable(out, RUN_FOLDER, overwrite)
    unlabelled = is_flat_image_folder(data_path)
    if unlabelled:  # a folder of images and nothing else: adapted on, and scored by entropy only
        config, model, _ = load_run_model(run_dir)
        dataset, collate = load_unlabelled(data_path, model.cfg, replace(config.data_options, augment=False))
        split = "all"  # a flat folder has no splits
    else:
        config, data, model, _ = load_run(run_dir, data_path)  # refuses data of another modality or other classes
        if config.data_options.augment:  # adapt on the images as evaluated, not augmented ones
            data = load_data(data_path, model.cfg, replace(config.data_options, augment=False),
                             tokenizer=model.tokenizer)
        dataset, collate = split_of(data, split), data.collate
    if not batchnorm_layers(model):
        raise ConfigError(NO_BN)
    if len(dataset) == 0:
        raise ConfigError(f"{data_path} has no examples in its {split} split: nothing to adapt on")
    torch.manual_seed(seed)
    device = resolve_device(config.train.device, fallback=True)
    model.to(device)
    # The stream: the split in a seeded random order. Batch statistics assume mixed batches; a folder read in
    # order gives batches of one class, on which TENT's normalisation erases the class (measured: 0.26 accuracy).
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    loader = ordered_loader(Subset(dataset, order), batch_size or config.train.batch_size, collate)
    batches = [to_device(b, device) for b in loader if b["labels"].numel() > 0]
    if not batches:
        raise ConfigError(f"{data_path}: no readable example in its {split} split")
    examples = sum(len(b["labels"]) for b in batches)
    labels = [] if unlabelled else [b["labels"].cpu() for b in batches]  # read for scoring only
    before = _eval_logits(model, batches)
    history: list = []
    if method == "adabn":
        adapt_batchnorm(model, [_unlabelled_with_count(b) for b in batches], device)
        after = _eval_logits(model, batches)
        settings = {"statistics": "cumulative average over the split's batches"}
    else:
        outcome = tent_adapt(model, batches, tent)
        after, history = outcome.logits, outcome.entropy
        settings = {**asdict(tent), "optimizer": "Adam(betas=(0.9, 0.999), weight_decay=0)",
                    "trained": "BatchNorm weight and bias", "normalisation": "batch statistics",
                    "updates": outcome.updates}
        if not tent.reset:  # the saved run is deployed in eval mode: give it the shifted data's statistics
            adapt_batchnorm(model, [_unlabelled_with_count(b) for b in batches], device)
            settings["saved_statistics"] = "re-estimated on the split after adaptation (AdaBN)"
        else:
            settings["saved_statistics"] = "the source run's (episodic: the weights are the source's)"
    saved = _eval_logits(model, batches)
    result = AdaptResult(
        run=str(run_dir), out=str(out), data=str(data_path), split=split, method=method, settings=settings,
        examples=int(examples), accuracy_before=_accuracy(before, labels),
        accuracy_after=_accuracy(after, labels), accuracy_saved=_accuracy(saved, labels),
        entropy_before=float(torch.cat([entropy(x) for x in before]).mean()),
        entropy_after=float(torch.cat([entropy(x) for x in after]).mean()), entropy_history=history, seed=seed,
        correct_before=_correct_in_split_order(before, labels, order),
        correct_after=_correct_in_split_order(after, labels, order))
    write_adapted_run(out, run_dir, data_path, model)
    atomic_write_json(out / "adapt.json", result.to_dict())
    return result


def _unlabelled_with_count(batch: dict) -> dict:
    """adapt_batchnorm counts examples by its "labels": a placeholder of the right size, not the labels."""
    return {**_unlabelled(batch), "labels": torch.full((_size(_unlabelled(batch)),), -1)}
