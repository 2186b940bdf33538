"""What an export is made of: the run's model with every mergeable PEFT method folded into its weights (in eval
mode), a module with plain tensor inputs around it, and the preprocessing and classes as data."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def merged_copy(model, strategy) -> tuple[nn.Module, list[str], list[str]]:
    """(a copy of the run's model with the mergeable methods folded in, merged method names, methods kept in the
    graph). Uses each method's own `merge_slot`, the path `transferlab modules merge` takes; an unmergeable one
    (adapter) stays a part of the model and so of the exported graph."""
    from transferlab.strategies.peft_methods._registry import added_markers, wrapper_markers

    merged_model = copy.deepcopy(model).eval()
    merged, kept = [], []
    for part in getattr(strategy, "parts", [strategy]):
        method = getattr(part, "method", "")
        if not method:  # full, linear_probe, freeze, regularisers: nothing was added to the model
            continue
        if part.mergeable:
            part.merge_slot(merged_model, "default")
            merged.append(part.spec())
        else:
            kept.append(part.spec())
    if merged and not kept:  # every method folded in: none of their tensors may be left
        marks = added_markers() + wrapper_markers()
        leftovers = [k for k in merged_model.state_dict() if any(m in f".{k}" for m in marks)]
        if leftovers:
            raise ConfigError(f"merge left method tensors behind: {leftovers[:3]}")
    return merged_model.eval(), merged, kept


class ImageGraph(nn.Module):
    """pixel_values (B, 3, H, W) float -> logits (B, C)."""

    input_names = ("pixel_values",)

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model({"pixel_values": pixel_values})


class TextGraph(nn.Module):
    """input_ids, attention_mask[, token_type_ids] (B, T) int64 -> logits (B, C)."""

    def __init__(self, model, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        return self.model(batch)


def graph_module(model) -> nn.Module:
    if model.cfg.modality == "image":
        return ImageGraph(model).eval()
    if model.cfg.modality == "text":
        names = tuple(k for k in TEXT_KEYS if k in getattr(model.tokenizer, "model_input_names", TEXT_KEYS))
        return TextGraph(model, names).eval()
    raise ConfigError(f"export takes image and text runs; this run's model reads {model.cfg.modality} inputs")


def example_inputs(graph: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
    return tuple(batch[name] for name in graph.input_names)


def preprocess_spec(config, model, folder: Path) -> dict:
    """preprocess.json: how raw inputs become the graph's inputs, as the run's evaluation transform does it.
    Text: the tokenizer is saved into `folder` (save_pretrained) and named here."""
    cfg = model.cfg
    if cfg.modality == "image":
        from transferlab.data._transforms import image_size, resize_size

        size = image_size(cfg, config.data_options)
        return {"modality": "image", "input": "pixel_values", "layout": "NCHW", "channel_order": "RGB",
                "dtype": "float32", "size": size, "resize": resize_size(size, cfg),
                "resize_rule": "shorter side to `resize` (the longer scaled, truncated), then a centre crop of "
                               "`size` x `size` (top/left offsets rounded)",
                "interpolation": str(cfg.interpolation).lower(), "crop_pct": cfg.crop_pct,
                "scale": 1 / 255, "mean": list(cfg.mean), "std": list(cfg.std), "jpeg_draft": True,
                "decode": "8-bit RGB, EXIF rotation applied, transparency composited on white; JPEG decoded with "
                          "PIL's draft mode at the smallest scale keeping both sides >= `resize`"}
    tokenizer = model.tokenizer
    from transferlab.data._text import _max_length

    max_length = _max_length(cfg, config.data_options, tokenizer)
    tokenizer.save_pretrained(str(folder))
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"the run's tokenizer ({type(tokenizer).__name__}) has no fast-tokenizer file: a consumer "
                          f"could not tokenize without transformers")
    graph_names = [k for k in TEXT_KEYS if k in getattr(tokenizer, "model_input_names", TEXT_KEYS)]
    return {"modality": "text", "inputs": graph_names, "dtype": "int64", "tokenizer_file": "tokenizer.json",
            "max_length": max_length, "truncation": True, "padding": "longest in the batch, on the right",
            "pad_id": int(tokenizer.pad_token_id), "pad_token": str(tokenizer.pad_token)}
