"""Merging: fold a module of a mergeable method (LoRA, BitFit: `mergeable` on its class) into the base weights,
giving a plain model and checkpoint.

LoRA: W <- W + (alpha/r) B A per wrapped layer (peft's `merge`), then the wrappers go; BitFit: the trained
biases (and BatchNorm statistics) already sit in the base's places. The merged model has exactly the base
architecture, so inference costs nothing extra; its outputs are checked against the unmerged model's.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from transferlab.errors import ConfigError
from transferlab.strategies.peft_methods._registry import added_markers, method_class, wrapper_markers
from transferlab.strategies.peft_methods.task_module import META, check_module_files, load_task_module, read_meta, strategy_for
from transferlab.outputs import MODULE_EXPORT, RUN_FOLDER, RUN_FORMAT, FolderKind, check_output_path, real, \
    remove_owned, require_writable
from transferlab.safe_io import atomic_write_bytes, atomic_write_json, atomic_write_text

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
    """(plain merged model, report) for a module of a mergeable method (LoRA, BitFit); ConfigError, with the
    method's reason, for the others (adapters)."""
    directory, meta = read_meta(path)
    strategy = strategy_for(meta)
    if not strategy.mergeable:
        strategy.merge_slot(None, "default")  # raises the method's own explanation
    model = load_task_module(directory)
    reference = copy.deepcopy(model)
    strategy.merge_slot(model, "default")
    marks = added_markers() + wrapper_markers()  # every method's, as each declared them
    leftovers = [k for k in model.state_dict() if any(m in f".{k}" for m in marks)]
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

    directory, meta = read_meta(path)
    out, state = check_out(out, directory, RUN_FOLDER, overwrite)
    run_config = merged_run_config(meta)
    model, report = merge_task_module(directory)  # everything that can fail happens before anything is written
    if state == "ours":
        remove_owned(out, RUN_FOLDER)
    # config.json first: it marks the folder as a run, so an interrupted merge can be redone with --overwrite
    atomic_write_json(out / "config.json", run_config)
    save_weights(out / "checkpoint" / "best.safetensors", model)
    report["data"] = run_config["data"]  # "" when the module recorded no run: evaluate then needs --data
    report["checkpoint"] = str(out / "checkpoint" / "best.safetensors")
    report["checkpoint_bytes"] = (out / "checkpoint" / "best.safetensors").stat().st_size
    atomic_write_json(out / "merge.json", report)
    return report


def merged_run_config(meta: dict) -> dict:
    """The merged run's config.json: the module's run with strategy full, always in the run format (so a later
    --overwrite recognises the folder as ours)."""
    from transferlab.runs import RunConfig

    source = meta.get("run_config")
    if not isinstance(source, dict):
        # A module saved outside a run (the Python API) records no data or training options: name the base,
        # and leave the data empty, so `transferlab evaluate --run OUT --data DATA` still loads the model.
        source = RunConfig(model=meta["base"]["model"], data="", weights=meta["base"].get("weights")).to_dict()
    return {**source, "strategy": "full", "classes": meta["head"]["classes"], "format": RUN_FORMAT}


def module_inputs(directory: Path) -> dict[str, Path]:
    """The inputs an output must stay clear of: the module folder, and the run holding it in task_module/
    (writing into the run would mix the merged model with the run's own checkpoint)."""
    inputs = {}
    folder = real(directory)
    if folder.name == "task_module" and (folder.parent / "config.json").is_file():
        inputs["the module's run"] = folder.parent
    inputs["the task module"] = Path(directory)
    return inputs


def check_out(out, directory: Path, kind: FolderKind, overwrite: bool) -> tuple[Path, str]:
    """(--out, its folder_state), or a ConfigError: empty, a file, overlapping the module or its run, a folder
    of someone else's files (even with --overwrite), or an earlier output of ours without --overwrite."""
    out = check_output_path(out, "--out", inputs=module_inputs(directory))
    return out, require_writable(out, kind, overwrite)


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

def export_module(path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Copy a task module into a standalone folder, with a README on loading it."""
    directory, meta = read_meta(path)
    out, state = check_out(out, directory, MODULE_EXPORT, overwrite)
    check_module_files(directory, meta)  # a pickle or a lying header is refused before anything is copied
    readme = _readme(meta, real(out).name)
    if state == "ours":
        remove_owned(out, MODULE_EXPORT)
    out.mkdir(parents=True, exist_ok=True)
    for name in meta["files"]:
        atomic_write_bytes(out / name, _read_plain(directory / name))
    atomic_write_text(out / "README.md", readme)
    atomic_write_bytes(out / META, _read_plain(directory / META))  # last: a folder without it is no module
    return out


def _read_plain(path: Path) -> bytes:
    """The file's bytes, refusing a symlink put in its place after read_meta checked the folder."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _readme(meta: dict, dirname: str) -> str:
    cls = method_class(meta["method"])
    peft = cls.readme_section(meta, dirname) if cls is not None else ""  # LoRA: loading it with peft alone
    fp = meta["base"]["fingerprint"]
    return _README.format(
        spec=meta["spec"], base_model=meta["base"]["model"], method=meta["method"],
        classes=", ".join(map(str, meta["head"]["classes"])), trainable=meta["trainable_params"],
        total=meta["total_params"], fp_tensors=", ".join(fp["tensors"]), fingerprint=fp["sha256"],
        dirname=dirname, peft=peft)
