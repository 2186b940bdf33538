"""One training step's forward and backward through a peft-wrapped model, before the run starts.

Some of peft's layers fail only in training on some models (peft 0.21: BOFT and HRA Conv2d layers `.view` a weight
that the run's channels-last layout made non-contiguous; OFT unfolds its 3x3 kernel over feature maps smaller than
it). `probe_training` finds this on two real training examples before the run folder is written and refuses
in one line, instead of a traceback in the middle of the first epoch.

The probe runs on a copy of the model, laid out and switched to train mode as the trainer will, inside
`fork_rng`: the model's weights, BatchNorm statistics, gradients and the random stream are left as they were, and
no optimizer exists yet. Only an error raised inside peft's code refuses; any other is left to the run, which
reports it as it always did (the probe judges peft's layers, not the data or the model). Where the step passes on a
contiguous copy, the refusal says that `--memory-format contiguous` trains.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)


def probe_training(model, batch: dict, channels_last: bool, trainable: set[str] | None, what: str,
                   suggestion: str) -> None:
    """Forward and backward of `batch` through a copy of `model`, with the parameters in `trainable` (None: all)
    requiring gradients as in the run; ConfigError (one line) if peft raises.

    `what` names the method and model in the message ("peft:boft on resnet18"); `suggestion` the method to try
    instead. When the run's channels-last layout is what breaks peft's layer (the step passes on a contiguous
    copy), the message says so: `--memory-format contiguous` is then the smallest change."""
    refusal = _attempt(model, batch, channels_last, trainable, what)
    if not refusal:
        return
    fix = f"use another method, e.g. {suggestion}"
    if channels_last and _attempt(model, batch, False, trainable, what) is None:
        fix = f"it trains with --memory-format contiguous, or {fix}"
    raise ConfigError(f"{refusal}; {fix}")


def _attempt(model, batch: dict, channels_last: bool, trainable: set[str] | None, what: str) -> str | None:
    """None if a training step through a copy of `model` passes; else the refusal's text (without the advice)
    when it fails inside peft, "" when it fails elsewhere."""
    # the tokenizer is not part of the computation: shared, not copied
    shared = {id(model.tokenizer): model.tokenizer} if getattr(model, "tokenizer", None) is not None else {}
    with torch.random.fork_rng(devices=[]):  # dropout masks drawn here stay off the run's stream
        twin = copy.deepcopy(model, memo=shared)
        if channels_last:  # as Trainer._place_model: the layout is what makes some of peft's views fail
            twin.to(memory_format=torch.channels_last)
            batch = _channels_last(batch)
        for name, param in twin.named_parameters():
            param.requires_grad_(trainable is None or name in trainable)
        twin.train()
        try:
            twin(batch).float().sum().backward()
        except Exception as exc:  # noqa: BLE001 - judged by _refusal: only peft's own failures refuse
            return _refusal(exc, twin, what)
    return None


def _refusal(exc: Exception, twin, what: str) -> str:
    """The refusal's text when `exc` was raised inside peft's code, else "" (logged, left to the run)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    frames = _peft_frames(exc)
    if not frames:
        logger.debug("%s: the training probe failed outside peft (%s: %s); left to the run",
                     what, type(exc).__name__, exc)
        return ""
    layer = _failing_layer(frames, twin, BaseTunerLayer)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{what}: {layer} fails in a training step ({type(exc).__name__} in {_where(frames[-1])}: {first})"


def _channels_last(batch: dict) -> dict:
    """The (B, 3, H, W) "pixel_values" laid out channels-last, as the trainer lays out its batches."""
    pixels = batch.get("pixel_values")
    if pixels is None or pixels.dim() != 4:
        return batch
    return {**batch, "pixel_values": pixels.contiguous(memory_format=torch.channels_last)}


def _peft_frames(exc: BaseException) -> list:
    """(frame, line) of the traceback's frames in peft's package, outermost first."""
    import peft

    root = str(Path(peft.__file__).resolve().parent)
    frames, tb = [], exc.__traceback__
    while tb is not None:
        if str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(root):
            frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def _failing_layer(frames: list, twin, tuner_layer) -> str:
    """"peft's <TYPE> <Kind> layer at <path>" for the innermost peft layer on the traceback, else "peft"."""
    names = {id(m): n for n, m in twin.backbone.named_modules()}
    for frame, _ in reversed(frames):
        layer = frame.f_locals.get("self")
        if isinstance(layer, tuner_layer) and id(layer) in names:
            base = type(getattr(layer, "base_layer", layer)).__name__
            method = type(layer).__module__.split(".")[-2].upper()  # peft.tuners.<method>.layer
            return f"peft's {method} {base} layer at {names[id(layer)]}"
    return "peft"


def _where(located) -> str:
    frame, line = located
    path = Path(frame.f_code.co_filename)
    parts = path.parts
    tail = "/".join(parts[parts.index("peft"):]) if "peft" in parts else path.name
    return f"{tail}:{line}"
