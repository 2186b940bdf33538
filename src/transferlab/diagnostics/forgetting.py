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

from transferlab.diagnostics._common import make_loader, reference_model, split_of
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
def compare_source_heads(original, finetuned, loader, device, label_map: list[int] | None = None) -> dict:
    """Accuracy (if `label_map` maps data labels to source indices) and agreement of two source heads."""
    from transferlab.training.evaluate import to_device

    original.eval()
    finetuned.eval()
    mapping = torch.tensor(label_map, device=device) if label_map is not None else None
    n = agree = correct_a = correct_b = rcorrect_a = rcorrect_b = 0
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        la, lb = original.source_logits(batch), finetuned.source_logits(batch)  # (B, S)
        pa, pb = la.argmax(-1), lb.argmax(-1)
        agree += (pa == pb).sum().item()
        n += pa.numel()
        if mapping is not None:
            y = mapping[batch["labels"]]
            correct_a += (pa == y).sum().item()
            correct_b += (pb == y).sum().item()
            present = mapping.unique()
            ra, rb = present[la[:, present].argmax(-1)], present[lb[:, present].argmax(-1)]
            rcorrect_a += (ra == y).sum().item()
            rcorrect_b += (rb == y).sum().item()
    if n == 0:
        raise ConfigError("no readable examples to compare the source heads on")
    out = {"examples": n, "agreement": agree / n}
    if mapping is not None:
        out.update(accuracy_before=correct_a / n, accuracy_after=correct_b / n,
                   restricted_accuracy_before=rcorrect_a / n, restricted_accuracy_after=rcorrect_b / n)
    return out


def forgetting_for_run(run_dir: str | Path, source_data: str | None = None, split: str = "val",
                       class_map: dict[str, int] | None = None, batch_size: int | None = None) -> ForgettingResult:
    """Forgetting of a run's source task (with `source_data`) or the agreement proxy on its target data."""
    from transferlab.runs import _tokenizer_for, load_run
    from transferlab.training.trainer import resolve_device

    config, bundle, model, _ = load_run(run_dir)
    if model.source_head is None:
        raise ConfigError(f"{config.model} has no source classifier (source head), so forgetting of a source "
                          f"task cannot be measured; fine-tune from --weights that include a classifier")
    original = reference_model(config)
    device = resolve_device(config.train.device)
    model.to(device)
    original.to(device)
    bs = batch_size or config.train.eval_batch_size
    if source_data is None:
        stats = compare_source_heads(original, model, make_loader(bundle, split_of(bundle, split), bs), device)
        return ForgettingResult(run=str(run_dir), mode="agreement_proxy", data=config.data, split=split,
                                examples=stats["examples"], agreement=stats["agreement"])
    tokenizer = _tokenizer_for(config.model) if model.cfg.modality == "text" else None
    src = load_source_data(source_data, model.cfg, image_size=config.data_options.image_size,
                           seed=config.data_options.seed, val_fraction=config.data_options.val_fraction,
                           tokenizer=tokenizer)
    label_map = source_label_map(list(src.classes), model.source_head.out_features, class_map)
    stats = compare_source_heads(original, model, make_loader(src, split_of(src, split), bs), device, label_map)
    return ForgettingResult(run=str(run_dir), mode="source_accuracy", data=source_data, split=split,
                            examples=stats["examples"], accuracy_before=stats["accuracy_before"],
                            accuracy_after=stats["accuracy_after"],
                            forgetting=stats["accuracy_before"] - stats["accuracy_after"],
                            restricted_accuracy_before=stats["restricted_accuracy_before"],
                            restricted_accuracy_after=stats["restricted_accuracy_after"],
                            agreement=stats["agreement"], source_classes=label_map)
