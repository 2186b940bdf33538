"""The one model contract every strategy and diagnostic is written against.

A `TransferModel` is a pre-trained backbone plus a new head for the target classes. Its parameters are
partitioned into ordered *depth groups* (stem, each block or layer, final norm, head): layer-wise strategies
(freezing, gradual unfreezing, discriminative learning rates) and diagnostics (weight change, CKA per depth)
use these groups and never attribute names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from transferlab.models._config import PretrainedCfg
from transferlab.models.heads import DEFAULT_HEAD, build_head


# The batch key of the one input tensor of a modality other than text (text: the tokenizer's outputs).
INPUT_KEYS = {"image": "pixel_values", "vector": "input_values"}


@dataclass(frozen=True)
class DepthGroup:
    """A named slice of the model, given as module-path prefixes (relative to the TransferModel)."""

    name: str
    prefixes: tuple[str, ...]


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class CutPoints(Protocol):
    """How a model kind runs its backbone in two parts, split after a depth group (see `forward_until`)."""

    def until(self, model: "TransferModel", batch: dict, k: int) -> Any: ...

    def features_from(self, model: "TransferModel", h: Any, k: int) -> torch.Tensor: ...


class _Stop(Exception):
    """Raised by a forward hook to end a forward pass once the wanted output is captured."""


def run_until_module(model: nn.Module, path: str, run) -> Any:
    """Call `run()` (a forward pass) and return the output of the module at `path` the first time it runs,
    stopping the pass there. The module is looked up now, so one a strategy swapped in is the one hooked."""
    captured = []

    def hook(_module, _inputs, output):
        captured.append(output)
        raise _Stop

    handle = model.get_submodule(path).register_forward_hook(hook)
    try:
        run()
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"module {path} did not run in the forward pass")
    return captured[0]


class TransferModel(nn.Module):
    """Backbone + new head, with ordered depth groups.

    `backbone(batch) -> features` is wrapped by `features()`; the head (built from a spec by
    `models.heads`, `linear` by default, its parameters under `head.`) maps pooled features (B, D) to
    logits (B, C). `forward_until` / `forward_from` split the forward pass after any depth group. The source head (the pre-trained classifier, when the source task had one) is kept
    outside the module tree: it is not trained, not saved in checkpoints, and is rebuilt from the
    pre-trained weights when needed (forgetting diagnostics, `--head-init source`).
    """

    def __init__(self, cfg: PretrainedCfg, backbone: nn.Module, feature_dim: int, num_classes: int,
                 group_prefixes: list[DepthGroup], source_head: nn.Linear | None = None,
                 tokenizer=None, pooling: str = "mean", head: str = DEFAULT_HEAD,
                 cuts: CutPoints | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = build_head(head, feature_dim, num_classes)
        self._cuts = cuts
        self._cuts_checked = False
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
        if self.cfg.modality in INPUT_KEYS:  # image (B, 3, H, W), vector (B, F): one tensor in
            return self.backbone(batch[INPUT_KEYS[self.cfg.modality]])
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        hidden = self.backbone(**inputs).last_hidden_state  # (B, T, H)
        return self.pool_tokens(hidden, batch["attention_mask"])

    def pool_tokens(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, H) -> (B, H): the first token ("cls") or the mean over unmasked tokens."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits for the target classes, (B, C).

        A batch holds the inputs, or what a frozen prefix of the model computed from them (the trainer's
        frozen-prefix cache): "features" (B, D), the head's input, or "cut_output" = forward_until(x, k)
        with "cut_group" = k."""
        if "features" in batch:
            return self.head(batch["features"])
        if "cut_output" in batch:
            return self.forward_from(batch["cut_output"], batch["cut_group"])
        return self.head(self.features(batch))

    # ---- cut points ----------------------------------------------------------------------------
    @property
    def num_backbone_groups(self) -> int:
        """K: the backbone's depth groups are 0..K-1, the head is group K."""
        return len(self._groups) - 1

    def forward_until(self, batch: dict, k: int) -> Any:
        """h_k, the output of depth group k (0 <= k < K): what the rest of the model needs to go on.

        Image models: a tensor, e.g. (B, C, H, W) after a CNN stage, (B, N, D) tokens after a ViT block.
        Text models: {"hidden": (B, T, H), "attention_mask": (B, T)}. The first call also checks, once,
        that the two halves together give the model's own features (see `check_cut_points`).
        """
        self._check_cut(k)
        if not self._cuts_checked:
            self.check_cut_points(batch)
        return self._cuts.until(self, batch, k)

    def forward_from(self, h: Any, k: int) -> torch.Tensor:
        """Logits (B, C) from h_k = `forward_until(batch, k)`, running only the groups after k (the
        modules of groups 0..k are not called): `forward_from(forward_until(x, k), k)` is `model(x)`."""
        self._check_cut(k)
        return self.head(self._cuts.features_from(self, h, k))

    def _check_cut(self, k: int) -> None:
        if self._cuts is None:
            raise NotImplementedError(f"model {self.cfg.name!r} ({type(self.backbone).__name__}) has no cut points")
        if not 0 <= k < self.num_backbone_groups:
            raise ValueError(f"cut point {k} is not a backbone depth group (0..{self.num_backbone_groups - 1})")

    @torch.no_grad()
    def check_cut_points(self, batch: dict) -> None:
        """Raise NotImplementedError if the split forward pass (after group 0) does not reproduce the model's
        own features on `batch` (a backbone whose forward is not the sequence of its modules). Runs in eval
        mode (no dropout, no BatchNorm statistics updated), then restores the mode."""
        was_training = self.training
        self.eval()
        try:
            full = self.features(batch)
            split = self._cuts.features_from(self, self._cuts.until(self, batch, 0), 0)
        finally:
            self.train(was_training)
        if split.shape != full.shape or not torch.allclose(split, full, atol=1e-5, rtol=1e-4):
            raise NotImplementedError(
                f"cut points: {type(self.backbone).__name__} ({self.cfg.name}) does not run as the sequence of "
                f"its depth groups' modules, so forward_until/forward_from cannot split it")
        self._cuts_checked = True

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
