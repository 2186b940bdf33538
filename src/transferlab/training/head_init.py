"""`--head-init source`: start the new head from the source classifier rows related to each target class.

Following Co-Tuning (You et al. 2020), the relationship p(y_s | y_t) is estimated from the source head's
predictions on the target training data: the mean source-class probability over the examples of each
target class. The head row of target class t is then sum_s p(s | t) * W_s (bias alike), so the model starts
out as the pre-trained classifier restricted to the related source classes.
"""
from __future__ import annotations

import logging

import torch

from transferlab.errors import ConfigError
from transferlab.training.evaluate import to_device

logger = logging.getLogger(__name__)


@torch.no_grad()
def source_relationship(model, batches, device) -> torch.Tensor:
    """p(y_s | y_t) as a (C_target, C_source) matrix whose rows sum to 1."""
    source = model.source_head
    sums = torch.zeros(model.num_classes, source.out_features)
    counts = torch.zeros(model.num_classes)
    model.eval()
    for batch in batches:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        probs = model.source_logits(batch).softmax(-1).cpu()  # (B, S)
        labels = batch["labels"].cpu()
        sums.index_add_(0, labels, probs)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
    if (counts == 0).any():
        raise ConfigError("--head-init source needs training examples of every class")
    return sums / counts[:, None]


@torch.no_grad()
def init_head_from_source(model, batches, device) -> torch.Tensor:
    from transferlab.models.heads import linear_weights

    if model.source_head is None:
        raise ConfigError(f"--head-init source: model {model.cfg.name!r} has no source classifier")
    weight, bias = linear_weights(model.head, "--head-init source")  # rows of source classes: linear only
    relation = source_relationship(model, batches, device)
    source = model.source_head
    weight.copy_((relation @ source.weight.cpu()).to(weight.device))
    bias.copy_((relation @ source.bias.cpu()).to(bias.device))
    top = relation.argmax(1).tolist()
    names = model.cfg.source_classes  # known for a pretrain checkpoint
    if names and len(names) == source.out_features:
        top = [f"{t} -> {names[s]}" for t, s in zip(getattr(model, "class_names", range(len(top))), top)]
    logger.info("head initialised from source classes (most related per target class): %s", top)
    return relation
