"""Forgetting of the source task (Avalanche's definition: accuracy before minus accuracy after).

With labelled source data: source-task accuracy of the original model (pre-trained backbone + source head)
and of the fine-tuned backbone with the same, original source head (`model.source_logits`).
Without: a proxy, the share of target inputs on which the two models' source heads predict the same class
(1.0 means the fine-tuned backbone still drives the source head as before; it says nothing about accuracy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from transferlab.diagnostics._common import make_loader, pretrained_key, reference_model, split_of
from transferlab.diagnostics.source import load_source_data, source_label_map
from transferlab.errors import ConfigError


@dataclass
class ForgettingResult:
    run: str
    mode: str  # "source_accuracy" or "agreement_proxy"
    data: str  # the source data, or the target data for the proxy
    split: str
    examples: int
    accuracy_before: float | None = None  # original model on the source task (full source label space)
    accuracy_after: float | None = None  # fine-tuned backbone + original source head
    forgetting: float | None = None  # accuracy_before - accuracy_after
    restricted_accuracy_before: float | None = None  # argmax over the source classes present in the data only
    restricted_accuracy_after: float | None = None
    agreement: float | None = None  # share of inputs with the same source-head prediction (both modes)
    source_classes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def source_predictions(model, loader, device, present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per example, in loader order: the source head's class over all source classes (`all`), over the
    source classes in `present` only (`restricted`, when given), and the data label (`labels`)."""
    from transferlab.training.evaluate import to_device

    model.eval()
    out: dict[str, list] = {"all": [], "restricted": [], "labels": []}
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        logits = model.source_logits(batch)  # (B, S)
        out["all"].append(logits.argmax(-1).cpu())
        out["labels"].append(batch["labels"].cpu())
        if present is not None:
            index = present.to(logits.device)
            out["restricted"].append(index[logits[:, index].argmax(-1)].cpu())
    return {k: torch.cat(v) if v else torch.empty(0, dtype=torch.long) for k, v in out.items()}


def compare_predictions(before: dict, after: dict, mapping: torch.Tensor | None = None) -> dict:
    """Agreement of two models' source-head predictions and, with `mapping` (data label -> source class),
    the accuracy of each."""
    n = after["all"].numel()
    if n == 0:
        raise ConfigError("no readable examples to compare the source heads on")
    out = {"examples": n, "agreement": (before["all"] == after["all"]).sum().item() / n}
    if mapping is not None:
        y = mapping[after["labels"]]
        out.update(accuracy_before=(before["all"] == y).sum().item() / n,
                   accuracy_after=(after["all"] == y).sum().item() / n,
                   restricted_accuracy_before=(before["restricted"] == y).sum().item() / n,
                   restricted_accuracy_after=(after["restricted"] == y).sum().item() / n)
    return out


def forgetting_for_run(run_dir: str | Path, source_data: str | None = None, split: str = "val",
                       class_map: dict[str, int] | None = None, batch_size: int | None = None,
                       cache: dict | None = None) -> ForgettingResult:
    """Forgetting of a run's source task (with `source_data`) or the agreement proxy on its target data.

    `cache` (e.g. a comparison report's): the pre-trained model's predictions are kept there and reused by
    every run of the same model, weights and data, which would otherwise compute them again each time.
    """
    from transferlab.runs import _tokenizer_for, load_run, load_run_model
    from transferlab.training.trainer import resolve_device

    if source_data is not None:  # the target data is not read: only the source task is scored
        config, model, _ = load_run_model(run_dir)
        bundle = None
    else:
        config, bundle, model, _ = load_run(run_dir)
    if model.source_head is None:
        raise ConfigError(f"{config.model} has no source classifier (source head), so forgetting of a source "
                          f"task cannot be measured; fine-tune from --weights that include a classifier")
    device = resolve_device(config.train.device, fallback=True)
    model.to(device)
    bs = batch_size or config.train.eval_batch_size
    label_map, data = None, bundle
    if source_data is not None:
        # read once per report: every run of one model and data options reads the same source examples
        c = model.cfg  # what reading the source data depends on (not the weights)
        data_key = ("source_data", source_data, c.modality, c.input_size, c.mean, c.std, c.interpolation,
                    c.crop_pct, c.source_classes, c.max_length, config.model if c.modality == "text" else None,
                    config.data_options.image_size,
                    config.data_options.seed, config.data_options.val_fraction)
        data = cache.get(data_key) if cache is not None else None
        if data is None:
            tokenizer = _tokenizer_for(config.model) if model.cfg.modality == "text" else None
            data = load_source_data(source_data, model.cfg, image_size=config.data_options.image_size,
                                    seed=config.data_options.seed, val_fraction=config.data_options.val_fraction,
                                    tokenizer=tokenizer)
            if cache is not None:
                cache[data_key] = data
        label_map = source_label_map(list(data.classes), model.source_head.out_features, class_map,
                                     model.cfg.source_classes)
    mapping = torch.tensor(label_map) if label_map is not None else None
    present = mapping.unique() if mapping is not None else None
    loader = make_loader(data, split_of(data, split), bs)
    # The pre-trained model (source heads need --weights, so it is never a random draw) on the same examples.
    key = pretrained_key("forgetting", config, source_data or config.data, split, bs, tuple(label_map or ()))
    before = cache.get(key) if cache is not None else None
    if before is None:
        before = source_predictions(reference_model(config).to(device), loader, device, present)
        if cache is not None:
            cache[key] = before
    stats = compare_predictions(before, source_predictions(model, loader, device, present), mapping)
    if source_data is None:
        return ForgettingResult(run=str(run_dir), mode="agreement_proxy", data=config.data, split=split,
                                examples=stats["examples"], agreement=stats["agreement"])
    return ForgettingResult(run=str(run_dir), mode="source_accuracy", data=source_data, split=split,
                            examples=stats["examples"], accuracy_before=stats["accuracy_before"],
                            accuracy_after=stats["accuracy_after"],
                            forgetting=stats["accuracy_before"] - stats["accuracy_after"],
                            restricted_accuracy_before=stats["restricted_accuracy_before"],
                            restricted_accuracy_after=stats["restricted_accuracy_after"],
                            agreement=stats["agreement"], source_classes=label_map)
