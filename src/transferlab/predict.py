"""Predictions for single inputs (image paths or text strings) with a trained run.

A run predicts without its training data: its classes are in its config. Each input gets its own answer, so
one unreadable file among many does not stop the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.errors import TransferlabError
from transferlab.units import escape_control


@dataclass
class Prediction:
    input: str
    label: str | None = None
    probability: float | None = None
    error: str | None = None


@torch.no_grad()
def predict_inputs(run_dir: str | Path, inputs: list[str]):
    """Yield a Prediction per input, in order; an input that cannot be read gets its error instead."""
    from transferlab.runs import load_run_model

    config, model, _ = load_run_model(run_dir)
    classes = config.classes
    for item in inputs:
        try:
            batch = _batch(model, config, item)
        except (TransferlabError, OSError, ValueError) as exc:
            yield Prediction(item, error=str(exc))
            continue
        probs = model(batch).softmax(-1)[0]
        index = int(probs.argmax())
        yield Prediction(item, str(classes[index]), float(probs[index]))


def _batch(model, config, item: str) -> dict:
    if model.cfg.modality == "image":
        from transferlab.data import load_single_image

        return {"pixel_values": load_single_image(item, model.cfg, config.data_options).unsqueeze(0)}
    return dict(model.tokenizer([item], truncation=True, return_tensors="pt",
                                max_length=config.data_options.max_length or model.cfg.max_length))


def tsv_field(text: str) -> str:
    """A value as one TSV field: backslash, tab, and line breaks escaped (a label or text may hold them), and every
    other control character as repr writes it (a class folder named with ESC[2J would clear the terminal)."""
    text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return escape_control(text)

