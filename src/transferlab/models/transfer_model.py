"""The one model contract every strategy and diagnostic is written against.

A `TransferModel` is a pre-trained backbone plus a new head for the target classes. Its parameters are
partitioned into ordered *depth groups* (stem, each block or layer, final norm, head): layer-wise strategies
(freezing, gradual unfreezing, discriminative learning rates) and diagnostics (weight change, CKA per depth)
use these groups and never attribute names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferlab.models._config import PretrainedCfg


@dataclass(frozen=True)
class DepthGroup:
    """A named slice of the model, given as module-path prefixes (relative to the TransferModel)."""

    name: str
    prefixes: tuple[str, ...]


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class TransferModel(nn.Module):
    """Backbone + new head, with ordered depth groups.

    `backbone(batch) -> features` is wrapped by `features()`; the head maps pooled features (B, D) to
    logits (B, C). The source head (the pre-trained classifier, when the source task had one) is kept
    outside the module tree: it is not trained, not saved in checkpoints, and is rebuilt from the
    pre-trained weights when needed (forgetting diagnostics, `--head-init source`).
    """

    def __init__(self, cfg: PretrainedCfg, backbone: nn.Module, feature_dim: int, num_classes: int,
                 group_prefixes: list[DepthGroup], source_head: nn.Linear | None = None,
                 tokenizer=None, pooling: str = "mean"):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = nn.Linear(feature_dim, num_classes)
        self.pooling = pooling
        self.tokenizer = tokenizer
        # Stored in a plain list so nn.Module does not register (and train, and save) it.
        self._source_head = [source_head.eval().requires_grad_(False)] if source_head is not None else []
        self._groups = list(group_prefixes) + [DepthGroup("head", ("head",))]
        # Parameters that did not come with the pre-trained model, which L2-SP, EWC, drift and BitFit leave
        # out: `new_prefixes` are module paths anchored at the model's root (the new head), `new_markers` are
        # module-name segments of modules strategies add anywhere inside (LoRA's `lora_A`, adapters). Kept apart
        # so that a pre-trained `backbone.head.norm` (timm ConvNeXt) is not taken for the new `head`.
        self.new_prefixes: set[str] = {"head"}
        self.new_markers: set[str] = set()

    # ---- forward -------------------------------------------------------------------------------
    def features(self, batch: dict) -> torch.Tensor:
        """Pooled backbone features, (B, D)."""
        if self.cfg.modality == "image":
            return self.backbone(batch["pixel_values"])
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        hidden = self.backbone(**inputs).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits for the target classes, (B, C)."""
        return self.head(self.features(batch))

    @property
    def source_head(self) -> nn.Linear | None:
        return self._source_head[0] if self._source_head else None

    def source_logits(self, batch: dict) -> torch.Tensor:
        """Logits of the original source classifier on this backbone's features, (B, S)."""
        if self.source_head is None:
            raise ValueError(f"model {self.cfg.name!r} has no source classifier")
        head = self.source_head.to(next(self.parameters()).device)
        return head(self.features(batch))

    # ---- depth groups --------------------------------------------------------------------------
    @property
    def depth_groups(self) -> list[DepthGroup]:
        """Groups from the input side to the output side; the last one is the new head."""
        return list(self._groups)

    def group_index(self, param_name: str) -> int:
        """Index of the depth group a parameter (or module path) belongs to: longest prefix wins."""
        best, best_len = -1, -1
        for i, group in enumerate(self._groups):
            for prefix in group.prefixes:
                if _matches(param_name, prefix) and len(prefix) > best_len:
                    best, best_len = i, len(prefix)
        if best < 0:
            raise KeyError(f"parameter {param_name!r} belongs to no depth group")
        return best

    def add_to_group(self, prefix: str, like: str) -> int:
        """Put the module path `prefix` (a module a strategy added) into the depth group of `like` (a
        parameter or module path already placed); returns the group's index. Groups are module-level, so a
        module added inside a block already belongs to that block's group; this places one added where no
        group's prefix covers it (e.g. beside the backbone's top-level modules)."""
        index = self.group_index(like)
        group = self._groups[index]
        if prefix not in group.prefixes:
            self._groups[index] = DepthGroup(group.name, group.prefixes + (prefix,))
        return index

    def grouped_parameters(self) -> list[list[tuple[str, nn.Parameter]]]:
        """Named parameters per depth group, in depth order."""
        out: list[list[tuple[str, nn.Parameter]]] = [[] for _ in self._groups]
        for name, p in self.named_parameters():
            out[self.group_index(name)].append((name, p))
        return out

    def group_modules(self) -> list[list[tuple[str, nn.Module]]]:
        """The top-level modules of each depth group (for activation hooks), in depth order."""
        modules = dict(self.named_modules())
        return [[(p, modules[p]) for p in g.prefixes if p in modules] for g in self._groups]

    def group_summary(self) -> list[dict]:
        return [{"index": i, "name": g.name, "params": sum(p.numel() for _, p in ps)}
                for i, (g, ps) in enumerate(zip(self._groups, self.grouped_parameters()))]

    def is_new_param(self, name: str) -> bool:
        """True for parameters with no pre-trained value (head, LoRA, adapters)."""
        return (any(_matches(name, p) for p in self.new_prefixes)
                or any(f".{m}." in f".{name}" for m in self.new_markers))

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total
