"""The source task: labelled source data in the source classifier's label space, and source models.

Source data is any data set `load_data` reads (an image folder, `digits:0-4`, ...) whose class names are
source class indices ("310", "309") or, for a 1000-class ImageNet head, ImageNet class names ("ants" and
"bees" match 310 'ant' and 309 'bee'; a trailing plural 's' is ignored). `class_map` ({"ants": 310})
overrides both.
"""
from __future__ import annotations

from pathlib import Path

import torch

from transferlab.errors import ConfigError


def source_label_map(class_names: list[str], num_source_classes: int,
                     class_map: dict[str, int] | None = None) -> list[int]:
    """Source class index for each class name of a source data set, in the data set's label order."""
    class_map = class_map or {}
    out = []
    for name in class_names:
        if name in class_map:
            index = int(class_map[name])
        elif name.strip().isdigit():
            index = int(name)
        else:
            index = _imagenet_index(name) if num_source_classes == 1000 else None
            if index is None:
                raise ConfigError(f"source class folder {name!r} is neither a source class index nor a known "
                                  f"class name; rename it to the index (e.g. 310) or pass a class map")
        if not 0 <= index < num_source_classes:
            raise ConfigError(f"source class {name!r} -> {index} is outside the source head's "
                              f"{num_source_classes} classes")
        out.append(index)
    return out


def _imagenet_index(name: str) -> int | None:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wanted = {name.lower().replace("_", " ").strip()}
    wanted.add(next(iter(wanted)).removesuffix("s"))
    for i in range(1000):
        synonyms = {s.strip().lower() for s in info.index_to_description(i).split(",")}
        if wanted & synonyms:
            return i
    return None


def load_source_data(path: str, cfg, image_size: int | None = None, seed: int = 0, val_fraction: float = 0.2,
                     tokenizer=None):
    """A source data set read with the model's preprocessing, and its labels mapped to source indices."""
    from transferlab.data import DataOptions, load_data

    options = DataOptions(image_size=image_size, seed=seed, val_fraction=val_fraction)
    data = load_data(path, cfg, options, tokenizer=tokenizer)
    return data


def export_source_weights(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Turn a finished run of a timm architecture into a weights file for `--weights`: its backbone plus
    its trained head under the architecture's classifier name, which then becomes the source head.

    `transferlab finetune --model ARCH --weights OUT ...` builds a model whose `source_head` is this run's
    head (classes in the run's order), e.g. digits 0-4 as the source task of a sequential experiment.
    A LoRA or BitFit run is merged into its base first (the file then has the plain architecture's names);
    an adapter run is refused: its adapters are layers the plain architecture does not have.
    """
    from transferlab.outputs import check_output_path
    from transferlab.runs import load_run_model
    from transferlab.safe_io import save_tensors

    out = check_output_path(out, "--out", {"--run": run_dir}, expect="file")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; choose another file or pass --overwrite")
    if out.exists() and out.suffix != ".safetensors":
        raise ConfigError(f"--out {out} exists and is not a .safetensors file; it is not replaced")
    config, model, strategy = load_run_model(run_dir)
    backbone = model.backbone
    if not hasattr(backbone, "reset_classifier"):
        raise ConfigError(f"{config.model} is not a timm architecture; only those accept --weights")
    _merge_peft(model, strategy)
    classifier = model.cfg.classifier or backbone.pretrained_cfg.get("classifier", "classifier")
    state = {k: v for k, v in backbone.state_dict().items()}
    state[f"{classifier}.weight"] = model.head.weight.detach()
    state[f"{classifier}.bias"] = model.head.bias.detach()
    save_tensors(out, state, metadata={"format": "transferlab-source-weights-1", "source_run": str(run_dir),
                                      "classes": ",".join(config.classes or [])})
    return {"out": str(out), "arch": model.cfg.architecture or config.model, "classes": config.classes,
            "tensors": len(state)}


def _merge_peft(model, strategy) -> None:
    """Fold a LoRA / BitFit slot into the base weights (so the file loads with --weights); refuse adapters."""
    from transferlab.strategies.peft_methods import PeftStrategy
    from transferlab.strategies.peft_methods._base import DEFAULT_SLOT

    parts = getattr(strategy, "parts", [strategy])
    for part in parts:
        if isinstance(part, PeftStrategy):
            if part.method not in ("lora", "bitfit"):
                raise ConfigError(f"export-source: a {part.method} run cannot become a plain weights file (its "
                                  f"adapters are extra layers); export its task module instead "
                                  f"(transferlab modules export)")
            part.merge_slot(model, DEFAULT_SLOT)


@torch.no_grad()
def predicted_source_labels(model, batch: dict) -> torch.Tensor:
    """The source head's own predictions (B,), used where no true source labels exist."""
    return model.source_logits(batch).argmax(-1)
