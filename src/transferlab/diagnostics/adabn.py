"""AdaBN (Li et al. 2016): re-estimate every BatchNorm layer's statistics on unlabelled target data.

Running statistics are reset and re-estimated with momentum=None, PyTorch's cumulative moving average: after
k batches each running mean is the mean of the k per-batch means (and likewise the per-batch unbiased
variances). Only the statistics change; no weight is trained and no label is read.

`source_weight` w mixes the stored (source) statistics back in, as Schneider et al. 2020 do with a prior:
running = w * source + (1 - w) * target. w = 0 is plain AdaBN.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from transferlab.diagnostics._common import make_loader, split_of
from transferlab.diagnostics.bn import batchnorm_layers
from transferlab.errors import ConfigError


@dataclass
class AdaBNResult:
    run: str
    out: str
    data: str
    split: str
    source_weight: float
    layers: int
    batches: int
    images: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def adapt_batchnorm(model, loader, device, max_batches: int | None = None,
                    source_weight: float = 0.0) -> tuple[int, int, int]:
    """Re-estimate BN statistics in place; returns (layers, batches, examples). Labels are not used."""
    if not 0 <= source_weight <= 1:
        raise ConfigError(f"source weight must be in [0, 1], got {source_weight}")
    from transferlab.training.evaluate import to_device

    layers = batchnorm_layers(model)
    if not layers:
        raise ConfigError("the model has no BatchNorm layers to adapt")
    model.eval()  # dropout off, and every other layer as deployed
    saved = []
    source = [(bn.running_mean.clone(), bn.running_var.clone()) for _, bn in layers]
    for _, bn in layers:
        saved.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
        bn.train()
    batches = examples = 0
    try:
        for batch in loader:
            if max_batches is not None and batches >= max_batches:
                break
            n = batch["labels"].numel()
            if n < 2:  # a batch of one has no variance
                continue
            batch = {k: v for k, v in batch.items() if k != "labels"}
            model(to_device(batch, device))
            batches += 1
            examples += n
    finally:
        for (_, bn), momentum in zip(layers, saved):
            bn.momentum = momentum
        model.eval()
    if batches == 0:
        raise ConfigError("no batch of at least 2 examples to estimate BatchNorm statistics on")
    if source_weight > 0:
        for (_, bn), (mean, var) in zip(layers, source):
            bn.running_mean.mul_(1 - source_weight).add_(source_weight * mean)
            bn.running_var.mul_(1 - source_weight).add_(source_weight * var)
    return len(layers), batches, examples


def adapt_bn_run(run_dir: str | Path, data_path: str, out: str | Path, split: str = "train",
                 batch_size: int | None = None, overwrite: bool = False,
                 source_weight: float = 0.0) -> AdaBNResult:
    """Adapt a run's BatchNorm statistics to `data_path` (same classes) and save a new run in `out`.

    `out` gets the run's config.json (its data set to `data_path`, so `transferlab evaluate --run OUT`
    evaluates on the adapted-to data by default), checkpoint/best.safetensors, and adabn.json.
    """
    from transferlab.data import DataOptions
    from transferlab.runs import load_run
    from transferlab.safe_io import atomic_write_json
    from transferlab.training.trainer import resolve_device

    from transferlab.outputs import RUN_FOLDER, check_output_path, require_writable

    run_dir = Path(run_dir)
    from transferlab.data._digits import is_digits_spec

    out = check_output_path(out, "--out", {"--run": run_dir,
                                            "--data": None if is_digits_spec(str(data_path)) else data_path})
    require_writable(out, RUN_FOLDER, overwrite)
    config, data, model, _ = load_run(run_dir, data_path)
    if config.data_options.augment:  # estimate statistics on the images as evaluated, not augmented ones
        from transferlab.data import load_data

        opts = DataOptions(**{**config.data_options.__dict__, "augment": False})
        data = load_data(data_path, model.cfg, opts, tokenizer=model.tokenizer)
    device = resolve_device(config.train.device, fallback=True)
    model.to(device)
    loader = make_loader(data, split_of(data, split), batch_size or config.train.batch_size)
    layers, batches, images = adapt_batchnorm(model, loader, device, source_weight=source_weight)
    write_adapted_run(out, run_dir, data_path, model)
    result = AdaBNResult(run=str(run_dir), out=str(out), data=str(data_path), split=split, source_weight=source_weight, layers=layers,
                         batches=batches, images=images)
    atomic_write_json(out / "adabn.json", {"method": "AdaBN (Li et al. 2016), cumulative average",
                                           **result.to_dict()})
    return result


def write_adapted_run(out: Path, run_dir: Path, data_path, model) -> None:
    """The adapted model as a run in `out`: its weights, and the source run's config pointing at the shifted data.
    Called only with the adapted model in hand, so a failure before leaves --out as it was."""
    from transferlab.data._digits import is_digits_spec
    from transferlab.outputs import RUN_FOLDER, remove_owned
    from transferlab.safe_io import atomic_write_json
    from transferlab.training.checkpoint import save_weights
    from transferlab.training.trainer import BEST

    if out.exists():
        remove_owned(out, RUN_FOLDER)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    save_weights(out / "checkpoint" / BEST, model)
    saved = json.loads((run_dir / "config.json").read_text())
    saved["data"] = data_path if is_digits_spec(str(data_path)) else str(Path(data_path).resolve())
    atomic_write_json(out / "config.json", saved)
