"""Merging several task modules trained on one base for different tasks into one multi-task module.

    transferlab modules merge A B C --method ties --density 0.5 --out merged
    transferlab predict  --run merged --task A img.png
    transferlab evaluate --run merged --task B

The backbone update of every module is merged into one; each task keeps its own head and BatchNorm statistics.

What does the merging:
- LoRA modules: peft's `add_weighted_adapter` (linear, cat for task_arithmetic, ties, dare_linear, dare_ties,
  svd) on a `PeftModel` holding the modules as adapters; the merged adapter is saved in peft's format
  (DIR/adapter_config.json + adapter_model.safetensors: `PeftModel.from_pretrained(backbone, DIR)` loads it)
  and folded into the backbone weights transferlab uses.
- every other method (bitfit, peft:<type>, adapter): task vectors merged by `peft.utils.merge_utils`
  (task_arithmetic, ties, dare_linear, dare_ties). Written here by hand, since peft has no such API for modules
  that are not LoRA adapters: the task vectors themselves (for a mergeable method, the module folded into the
  base by its own `merge_slot`, minus the base; for adapters, which do not fold, the adapter tensors, merged
  in place) and `linear` (task_arithmetic with weights 1/n).

DIR/multitask.json (written last) records the tasks, their classes and runs, and the merge; DIR/backbone.safetensors
the merged backbone (the changed base tensors under plain names, or the merged adapter tensors);
DIR/tasks.safetensors every task's head and BatchNorm statistics as `<task>/<name>`.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch

from transferlab.errors import ConfigError
from transferlab.outputs import FolderKind, check_output_path, remove_owned, require_writable
from transferlab.safe_io import atomic_write_json, load_tensors, save_tensors
from transferlab.strategies.peft_methods._slots import DEFAULT_SLOT, batchnorm_buffers, plain_name
from transferlab.strategies.peft_methods.task_module import apply_overrides, build_base, check_base, head_from, \
    load_task_module, plain_state_dict, read_meta, read_module_tensors, strategy_for
from transferlab.strategies.peft_methods.multitask_module import BACKBONE, FORMAT, MARKER, TASKS, apply_task, \
    is_multitask, read_multitask, task_entry  # noqa: F401  (re-exported: the merge writes what these read)

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
MULTITASK_FOLDER = FolderKind(name="multi-task module", marker=MARKER, formats=frozenset({FORMAT}),
                              files=frozenset({MARKER, BACKBONE, TASKS, *PEFT_FILES}))

METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "svd")
# our method -> add_weighted_adapter's combination_type (task_arithmetic: "cat" sums the weighted B_i A_i exactly)
_LORA_COMBINATION = {"linear": "linear", "task_arithmetic": "cat", "ties": "ties", "dare_linear": "dare_linear",
                     "dare_ties": "dare_ties", "svd": "svd"}


def task_name(directory: Path) -> str:
    """A module's default task name: its run folder's name (or the module folder's)."""
    return directory.parent.name if directory.name == "task_module" else directory.name


def merge_modules(paths: list[str | Path], out: str | Path, method: str = "linear", weights: list[float] | None = None,
                  density: float | None = None, names: list[str] | None = None, overwrite: bool = False) -> dict:
    """Merge the modules at `paths` into a multi-task module at `out`; every check runs before anything is
    written (ConfigError, one line)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose from {', '.join(METHODS)}")
    if len(paths) < 2:
        raise ConfigError("merging task modules takes two or more (one module folds into its base without --method)")
    metas = [read_meta(p) for p in paths]
    dirs = [d for d, _ in metas]
    names = list(names) if names else [task_name(d) for d in dirs]
    if len(names) != len(paths):
        raise ConfigError(f"--names gives {len(names)} names for {len(paths)} modules")
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_\-]+", n)]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"task names must be distinct words (letters, digits, _ and -): {', '.join(names)}; "
                          f"name them with --names")
    if weights is not None and len(weights) != len(paths):
        raise ConfigError(f"--weights gives {len(weights)} weights for {len(paths)} modules")
    if weights is None:
        weights = [1.0 / len(paths)] * len(paths) if method in ("linear", "svd") else [1.0] * len(paths)
    if density is not None and not 0 < density <= 1:
        raise ConfigError(f"--density must be in (0, 1], got {density}")
    if method in ("ties", "dare_linear", "dare_ties") and density is None:
        density = 0.5
    first = metas[0][1]
    for (directory, meta), name in zip(metas[1:], names[1:]):
        if meta["base"]["architecture"] != first["base"]["architecture"] \
                or meta["base"]["fingerprint"]["sha256"] != first["base"]["fingerprint"]["sha256"]:
            raise ConfigError(f"modules from different bases: {names[0]} was made for {first['base']['model']} "
                              f"({first['base']['fingerprint']['sha256'][:12]}), {name} for {meta['base']['model']} "
                              f"({meta['base']['fingerprint']['sha256'][:12]}); merge modules of one base")
    kinds = sorted({m["method"] for _, m in metas})
    if len(kinds) > 1:
        raise ConfigError(f"modules of different methods ({', '.join(kinds)}) cannot merge into one update")
    kind = kinds[0]
    strategy = strategy_for(first)
    if method == "svd" and kind != "lora":
        raise ConfigError(f"--method svd merges low-rank (LoRA) updates; {kind} modules have none: use linear, "
                          f"task_arithmetic, ties, dare_linear or dare_ties")
    if not strategy.mergeable and len({m["spec"] for _, m in metas}) > 1:
        raise ConfigError(f"{kind} modules with different specs ({', '.join(sorted({m['spec'] for _, m in metas}))}) "
                          f"have different layers and cannot merge")
    out = check_output_path(out, "--out", inputs={f"module {n}": d for n, d in zip(names, dirs)})
    state = require_writable(out, MULTITASK_FOLDER, overwrite)

    # ---- the merge (in memory) ----
    base = build_base(first)
    base_state = plain_state_dict(base)
    with tempfile.TemporaryDirectory() as tmp:
        peft_dir = None
        if kind == "lora":
            backbone, peft_dir = _merge_lora(dirs, names, weights, method, density, Path(tmp))
            kind_of_backbone, spec = "weights", None
        elif strategy.mergeable:
            backbone = _merge_folded(dirs, weights, method, density, base_state)
            kind_of_backbone, spec = "weights", None
        else:  # adapters do not fold: merge their own tensors
            backbone = _merge_tensors([_method_tensors(d, m) for d, m in metas], weights, method, density)
            kind_of_backbone, spec = "module", first["spec"]
        tasks, task_meta = {}, {}
        for (directory, meta), name in zip(metas, names):
            tensors = read_module_tensors(directory, meta)
            for key in meta["tensors"]["head"] + meta["tensors"]["batchnorm"]:
                tasks[f"{name}/{key}"] = tensors[key]
            from transferlab.modules._merge import merged_run_config

            task_meta[name] = {"module": str(directory), "method": meta["method"], "spec": meta["spec"],
                               "classes": meta["head"]["classes"], "head": meta["head"],
                               "batchnorm": meta["tensors"]["batchnorm"], "head_tensors": meta["tensors"]["head"],
                               "run_config": merged_run_config(meta)}
        meta_out = {"format": FORMAT, "method": method, "weights": weights, "density": density,
                    "module_method": kind, "backbone": {"kind": kind_of_backbone, "spec": spec,
                                                        "tensors": sorted(backbone)},
                    "base": first["base"], "tasks": task_meta,
                    "peft_adapter": bool(peft_dir),
                    "merged_with": ("peft add_weighted_adapter (combination_type "
                                    f"{_LORA_COMBINATION[method]})" if kind == "lora" else
                                    f"peft.utils.merge_utils.{'task_arithmetic' if method == 'linear' else method} "
                                    f"on task vectors (transferlab)")}
        # ---- writing ----
        if state == "ours":
            remove_owned(out, MULTITASK_FOLDER)
        out.mkdir(parents=True, exist_ok=True)
        save_tensors(out / BACKBONE, {k: v.contiguous() for k, v in backbone.items()}, metadata={"format": FORMAT})
        save_tensors(out / TASKS, {k: v.contiguous() for k, v in tasks.items()}, metadata={"format": FORMAT})
        if peft_dir is not None:
            for f in PEFT_FILES:
                shutil.copyfile(peft_dir / f, out / f)
        atomic_write_json(out / MARKER, meta_out)
    return {"out": str(out), "method": method, "weights": weights, "density": density, "tasks": names,
            "module_method": kind, "backbone_tensors": len(backbone), "merged_with": meta_out["merged_with"]}


def _merge_lora(dirs, names, weights, method, density, tmp: Path):
    """peft's add_weighted_adapter on the modules as adapters of one PeftModel; returns (changed plain backbone
    tensors after folding the merged adapter, folder holding the merged adapter in peft's format)."""
    import warnings

    from peft import PeftModel

    meta0 = read_meta(dirs[0])[1]
    model = build_base(meta0)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(model.backbone, str(dirs[0]), adapter_name=names[0])
        for directory, name in zip(dirs[1:], names[1:]):
            peft_model.load_adapter(str(directory), adapter_name=name)
        kwargs = {"density": density} if density is not None else {}
        try:
            peft_model.add_weighted_adapter(names, weights, "merged", combination_type=_LORA_COMBINATION[method],
                                            **kwargs)
        except ValueError as exc:
            first = (str(exc).strip().splitlines() or ["?"])[0]
            raise ConfigError(f"--method {method} cannot merge these LoRA modules: {first}") from None
        peft_model.save_pretrained(str(tmp), selected_adapters=["merged"])
        peft_model.set_adapter("merged")
        plain = peft_model.merge_and_unload(adapter_names=["merged"])
    after = plain.state_dict()
    changed = {f"backbone.{k}": v for k, v in after.items() if k in before and not torch.equal(v, before[k])}
    folder = tmp / "merged" if (tmp / "merged" / PEFT_FILES[0]).is_file() else tmp
    return changed, folder


def _task_vectors(dirs, base_state) -> list[dict[str, torch.Tensor]]:
    """Each module folded into its base by the method's own merge_slot, minus the base (backbone tensors that
    changed; BatchNorm statistics stay per task)."""
    vectors = []
    for directory in dirs:
        meta = read_meta(directory)[1]
        model = load_task_module(directory)
        strategy_for(meta).merge_slot(model, DEFAULT_SLOT)
        folded = plain_state_dict(model)
        stats = set(batchnorm_buffers(model))
        vectors.append({k: v - base_state[k] for k, v in folded.items() if k.startswith("backbone.")
                        and k not in stats and v.is_floating_point() and not torch.equal(v, base_state[k])})
    return vectors


def _merge_folded(dirs, weights, method, density, base_state):
    vectors = _task_vectors(dirs, base_state)
    merged = _merge_tensors(vectors, weights, method, density)
    return {k: base_state[k] + v for k, v in merged.items()}


def _method_tensors(directory, meta) -> dict[str, torch.Tensor]:
    tensors = read_module_tensors(directory, meta)
    return {k: tensors[k] for k in meta["tensors"]["method"]}


def _merge_tensors(vectors: list[dict], weights, method, density) -> dict[str, torch.Tensor]:
    """Per tensor name, peft.utils.merge_utils over the modules' tensors (zero where a module has none)."""
    from peft.utils import merge_utils

    keys = sorted(set().union(*vectors))
    w = torch.tensor(weights, dtype=torch.float32)
    out = {}
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # dare's random pruning: the same merge every time
    try:
        for key in keys:
            ref = next(v[key] for v in vectors if key in v)
            tensors = [v.get(key, torch.zeros_like(ref)).float() for v in vectors]
            if method in ("linear", "task_arithmetic"):
                merged = merge_utils.task_arithmetic(tensors, w)
            elif method == "ties":
                merged = merge_utils.ties(tensors, w, density)
            elif method == "dare_linear":
                merged = merge_utils.dare_linear(tensors, w, density)
            else:
                merged = merge_utils.dare_ties(tensors, w, density)
            out[key] = merged.to(ref.dtype)
    finally:
        torch.random.set_rng_state(gen_state)
    return out
