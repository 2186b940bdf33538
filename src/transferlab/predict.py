"""Predictions for single inputs (image paths or text strings) with a trained run (not a run on numeric vectors).

A run predicts without its training data: its classes are in its config. Each input gets its own answer, so
one unreadable file among many does not stop the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transferlab.errors import ConfigError, TransferlabError
from transferlab.units import escape_control


@dataclass
class Prediction:
    input: str
    label: str | None = None
    probability: float | None = None
    error: str | None = None


def predict_inputs(run_dir: str | Path, inputs: list[str], task: str | None = None):
    """An iterator of one Prediction per input, in order; an input that cannot be read gets its error instead.
    Not a generator: the run is loaded, and a folder given to an image run refused (ConfigError), at the call,
    before a caller prints anything."""
    from transferlab.runs import load_run_model

    config, model, _ = load_run_model(run_dir, task=task)
    if model.cfg.modality == "vector":  # its inputs would need the training split's statistics, which no file keeps
        raise ConfigError(f"{run_dir} was trained on numeric vectors ({config.data}): predict takes image or text "
                          f"inputs; score its splits with `transferlab evaluate --run {run_dir}`")
    if model.cfg.modality == "image":  # a text run's inputs are texts, whatever files share their names
        folders = [item for item in inputs if Path(item).is_dir()]
        if folders:
            shown = escape_control(folders[0].rstrip("/") or "/")
            raise ConfigError(f"{shown} is a folder: give image files (or {shown}/*.png)"
                              + (f"; {len(folders) - 1} more input(s) are folders too" if len(folders) > 1 else ""))
    return _predictions(model, config, inputs)


@torch.no_grad()
def _predictions(model, config, inputs: list[str]):
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



def predict_exported(model_path: str | Path, inputs: list[str]):
    """predict_inputs for a model written by `transferlab export --format onnx` (run with ONNX Runtime, its
    preprocessing and classes read from the files beside it)."""
    path = Path(model_path)
    if path.suffix != ".onnx" or not path.is_file():
        raise ConfigError(f"--model {model_path}: give an exported model.onnx (transferlab export --format onnx)")
    for name in ("preprocess.json", "classes.json"):
        if not (path.parent / name).is_file():
            raise ConfigError(f"--model {model_path}: no {name} beside it (transferlab export writes both)")
    from transferlab.onnx_predictor import OnnxPredictor, softmax

    predictor = OnnxPredictor(path)
    if predictor.pre["modality"] == "image":
        folders = [item for item in inputs if Path(item).is_dir()]
        if folders:
            raise ConfigError(f"{escape_control(folders[0])} is a folder: give image files")
    return _exported_predictions(predictor, inputs, softmax)


def _exported_predictions(predictor, inputs: list[str], softmax):
    for item in inputs:
        try:
            probs = softmax(predictor.logits([item]))[0]
        except (OSError, ValueError) as exc:
            yield Prediction(item, error=str(exc))
            continue
        index = int(probs.argmax())
        yield Prediction(item, str(predictor.classes[index]), float(probs[index]))
