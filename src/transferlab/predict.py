"""Predictions for single inputs (image paths or text strings) with a trained run."""
from __future__ import annotations

from pathlib import Path

import torch


@torch.no_grad()
def predict_inputs(run_dir: str | Path, inputs: list[str]):
    """Yield (label, probability, input) per input."""
    from transferlab.runs import load_run

    config, data, model, _ = load_run(run_dir)
    classes = config.classes
    for item in inputs:
        if model.cfg.modality == "image":
            from transferlab.data import load_single_image

            batch = {"pixel_values": load_single_image(item, model.cfg, config.data_options).unsqueeze(0)}
        else:
            batch = dict(model.tokenizer([item], truncation=True, return_tensors="pt",
                                         max_length=config.data_options.max_length or model.cfg.max_length))
        probs = model(batch).softmax(-1)[0]
        index = int(probs.argmax())
        yield classes[index], float(probs[index]), item
