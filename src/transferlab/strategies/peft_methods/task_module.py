"""The task-module format: a small folder that turns a shared base model into a task's model.

    DIR/transferlab_module.json   what it is: method, spec, base model (name, architecture, weights
                                  fingerprint), classes, tensor lists, sizes. Written last: a folder without
                                  it is not a (complete) module.
    DIR/module.safetensors        the new head (head.weight, head.bias), BatchNorm running statistics that
                                  changed during training, and the method's tensors (adapters, BitFit
                                  biases), all under the TransferModel's plain parameter names
    DIR/adapter_config.json       LoRA only (a method's own `files`): peft's own format, for the plain
    DIR/adapter_model.safetensors   backbone (peft.PeftModel.from_pretrained(backbone, DIR) loads it)

What differs between methods (which tensors are added, which files belong to a module, whether it merges) is
declared on each method's class and read from the registry (`_registry.py`), not listed here.

A module refuses to load onto a base it was not made for: the architecture must match, and a sha256 over a few
named backbone weight tensors (no method ever trains a weight matrix) must equal the one recorded.

A module is also a file someone may hand over: `read_meta`, which every reader goes through, accepts only the
file names above (no paths) and no symlinks among them, so a crafted metadata file cannot make `show`, `export`
or `merge` read or write anything outside the module's folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError, UnsafeFileError
from transferlab.outputs import MODULE_FILES
from transferlab.safe_io import atomic_write_json, check_safetensors_header, load_tensors, save_tensors
from transferlab.strategies.peft_methods._registry import is_added, is_mergeable, method_names, needed_files
from transferlab.strategies.peft_methods._slots import DEFAULT_SLOT, batchnorm_buffers, plain_name

logger = logging.getLogger(__name__)

FORMAT = "transferlab-task-module-1"
META = "transferlab_module.json"
STATE = "module.safetensors"
# outputs.py's list is what --overwrite may delete; every method's own files are among them (register_method).
_ALL_FILES = (META, STATE, *sorted(MODULE_FILES - {META, STATE}))
_MEMBERS = MODULE_FILES - {META}  # what meta["files"] may name


def _needed(method) -> tuple[str, ...]:
    """The files a module of `method` is made of besides the metadata: STATE and the method's own."""
    return (STATE, *needed_files(method))


# ---- names and sizes ---------------------------------------------------------------------------
_is_added = is_added  # a tensor some method added (the methods' `markers`)


def plain_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's state under the plain model's names, without any LoRA/adapter tensors."""
    return {plain_name(k): v for k, v in model.state_dict().items() if not _is_added(k)}


def full_checkpoint_bytes(model) -> int:
    """Bytes of a full safetensors checkpoint of the plain model (what full fine-tuning saves per task)."""
    from safetensors.torch import save

    return len(save({k: v.detach().cpu().contiguous() for k, v in plain_state_dict(model).items()}))


def _folder_bytes(directory: Path, files: list[str]) -> dict[str, int]:
    return {f: (directory / f).stat().st_size for f in files if (directory / f).is_file()}


# ---- base identity -----------------------------------------------------------------------------
def _backbone_weights(model) -> list[tuple[str, torch.Tensor]]:
    """(plain name, tensor) of the backbone's pre-trained weight matrices / kernels, in model order."""
    return [(plain_name(n), p) for n, p in model.named_parameters()
            if n.startswith("backbone.") and p.ndim > 1 and not model.is_new_param(n) and not _is_added(n)]


def base_fingerprint(model, names: list[str] | None = None) -> dict:
    """sha256 over (name, shape, bytes) of four backbone weight tensors: first, second, middle, last."""
    weights = _backbone_weights(model)
    if names is None:
        picks = sorted({0, min(1, len(weights) - 1), len(weights) // 2, len(weights) - 1})
        names = [weights[i][0] for i in picks] if weights else []
    table = dict(weights)
    digest = hashlib.sha256()
    for name in names:
        if name not in table:
            return {"sha256": None, "tensors": names, "missing": name}
        tensor = table[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return {"sha256": digest.hexdigest(), "tensors": list(names)}


def backbone_param_count(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if n.startswith("backbone.") and not _is_added(n))


def check_base(meta: dict, model, where) -> None:
    """ConfigError unless `model` is the base the module was trained on (architecture + weights)."""
    base = meta["base"]
    if model.cfg.modality != base["modality"] or model.cfg.architecture != base["architecture"] \
            or backbone_param_count(model) != base["backbone_params"]:
        raise ConfigError(f"task module {where} was made for {base['model']} ({base['architecture']}, "
                          f"{base['backbone_params']:,} backbone parameters), not for {model.cfg.name} "
                          f"({model.cfg.architecture}, {backbone_param_count(model):,}): load it onto its own base")
    found = base_fingerprint(model, base["fingerprint"]["tensors"])
    if found["sha256"] != base["fingerprint"]["sha256"]:
        raise ConfigError(f"task module {where} was made for other {base['model']} weights: the fingerprint of "
                          f"{', '.join(base['fingerprint']['tensors'][:2])}, ... differs "
                          f"({(found['sha256'] or 'missing tensor')[:12]} here, "
                          f"{base['fingerprint']['sha256'][:12]} recorded)")


# ---- writing -----------------------------------------------------------------------------------
def write_task_module(strategy, model, directory: Path, run_dir: Path | None = None) -> dict:
    """Write `strategy`'s default slot of a trained `model` as a task module; return facts for metrics.json."""
    from transferlab import __version__ as version

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META).unlink(missing_ok=True)  # incomplete until the metadata is back
    for name in _ALL_FILES:
        (directory / name).unlink(missing_ok=True)
    run_config = None
    if run_dir is not None and (Path(run_dir) / "config.json").is_file():
        run_config = json.loads((Path(run_dir) / "config.json").read_text())

    method_tensors = strategy.save_slot(model, DEFAULT_SLOT, directory)
    head = {f"head.{k}": v.detach() for k, v in model.head.state_dict().items()}
    now = batchnorm_buffers(model)
    changed_bn = {k: v for k, v in now.items()
                  if k in strategy.bn_reference and not torch.equal(v.cpu(), strategy.bn_reference[k].cpu())}
    tensors = {**method_tensors, **changed_bn, **head}
    save_tensors(directory / STATE, tensors, metadata={"format": FORMAT})

    slot_names = strategy.slot_parameter_names(model, DEFAULT_SLOT)
    params = dict(model.named_parameters())
    trainable = sum(params[n].numel() for n in slot_names) + sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())  # as the trainer counts: base + added + head
    files = [f for f in _ALL_FILES if f != META and (directory / f).is_file()]
    full_bytes = full_checkpoint_bytes(model)
    meta = {
        "format": FORMAT,
        "method": strategy.method,
        "spec": strategy.spec(),
        "run_strategy": (run_config or {}).get("strategy", strategy.spec()),
        "base": {
            "model": (run_config or {}).get("model", model.cfg.name),
            "weights": (run_config or {}).get("weights"),
            "architecture": model.cfg.architecture,
            "modality": model.cfg.modality,
            "backbone_params": backbone_param_count(model),
            "fingerprint": base_fingerprint(model),
        },
        "head": {"classes": list(getattr(model, "class_names", []) or range(model.num_classes)),
                 "num_classes": model.num_classes, "feature_dim": model.feature_dim, "pooling": model.pooling,
                 "spec": _head_spec(model.head)},
        "structure": strategy.structure(model),
        "tensors": {"method": sorted(method_tensors), "batchnorm": sorted(changed_bn), "head": sorted(head)},
        "trainable_params": trainable,
        "total_params": total,
        "files": files,
        "full_checkpoint_bytes": full_bytes,
        "run_config": run_config,
        "created_by": f"transferlab {version}",
    }
    atomic_write_json(directory / META, meta)
    sizes = _folder_bytes(directory, files + [META])
    module_bytes = sum(sizes.values())
    logger.info("task module written to %s: %d bytes (%.2f%% of a full checkpoint's %d)", directory,
                module_bytes, 100 * module_bytes / full_bytes, full_bytes)
    return {"task_module": str(directory), "task_module_bytes": module_bytes,
            "full_checkpoint_bytes": full_bytes, "task_module_share": module_bytes / full_bytes}


# ---- reading -----------------------------------------------------------------------------------
def resolve_module_dir(path: str | Path) -> Path:
    """A task-module folder, or a run directory holding one in task_module/."""
    path = Path(path)
    for directory in (path, path / "task_module"):
        marker = directory / META
        if marker.is_file() or marker.is_symlink():  # a symlinked marker is found here and refused by read_meta
            return directory
    if not path.exists():
        raise ConfigError(f"no task module at {path}: the path does not exist")
    names = method_names()
    methods = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)
    raise ConfigError(f"no task module at {path} (no {META}; runs of {methods} write one to RUN/task_module)")


def read_meta(path: str | Path) -> tuple[Path, dict]:
    """(module folder, metadata), after checking that every file the metadata names is a plain file of the
    module's own: every reader (list, show, merge, export, load_task_module, MultiTaskModel) comes here."""
    directory = resolve_module_dir(path)
    _refuse_symlinks(directory)
    try:
        meta = json.loads((directory / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnsafeFileError(f"{directory / META}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UnsafeFileError(f"{directory / META}: not a {FORMAT} file")
    _check_listed_files(directory, meta)
    return directory, meta


def _refuse_symlinks(directory: Path) -> None:
    """A module's own files are plain files: a symlink among them could lead anywhere (/etc/..., another
    user's files), and export would copy whatever it points to. The folder itself may be reached through a
    symlink; its files are then the real folder's files."""
    for name in sorted(MODULE_FILES):
        if (directory / name).is_symlink():
            raise UnsafeFileError(f"{directory / name} is a symbolic link; a task module's files must be plain "
                                  f"files inside its folder (refused, nothing was read)")


def _name_problem(name) -> str | None:
    """Why an entry of meta["files"] is not one of a module's own file names, or None."""
    if not isinstance(name, str) or not name.strip():
        return "is empty or not a file name"
    if any(not ch.isprintable() for ch in name):
        return "holds control characters"
    if os.path.isabs(name):
        return "is an absolute path"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "is a path, not a file name"
    if name not in _MEMBERS:
        return f"is not one of a task module's files ({', '.join(sorted(_MEMBERS))})"
    return None


def _check_listed_files(directory: Path, meta: dict) -> None:
    """meta["files"]: names from the known set only (a name is joined to the folder, and export joins it to
    --out too, so `../x` or `/x` would read and write outside both), each present once as a plain file."""
    where = directory / META
    files = meta.get("files")
    if not isinstance(files, list):
        raise UnsafeFileError(f"{where}: 'files' is not a list of file names")
    for name in files:
        problem = _name_problem(name)
        if problem:
            raise UnsafeFileError(f"{where}: files entry {name!r} {problem}; refused (nothing was read or written)")
    if len(set(files)) != len(files):
        raise UnsafeFileError(f"{where}: 'files' lists a file twice")
    for name in _needed(meta.get("method")):
        if name not in files:
            raise UnsafeFileError(f"{where}: 'files' does not list {name}, which a {meta.get('method')} module "
                                  f"is made of")
    for name in files:
        if not (directory / name).is_file():
            raise UnsafeFileError(f"{where} lists {name}, which is missing from {directory}")


def check_module_files(directory: Path, meta: dict) -> None:
    """Every listed file is what its name says (a safetensors whose header fits the file, or a JSON object),
    and module.safetensors holds the tensors the metadata lists: before export copies them, since a copied
    pickle would be run by whoever loads it with torch.load."""
    for name in meta["files"]:
        path = directory / name
        if name.endswith(".safetensors"):
            check_safetensors_header(path)
        elif name.endswith(".json"):
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise UnsafeFileError(f"{path}: not valid JSON") from None
            if not isinstance(obj, dict):
                raise UnsafeFileError(f"{path}: not a JSON object")
    read_module_tensors(directory, meta)


def strategy_for(meta: dict):
    from transferlab.strategies.registry import parse_one

    strategy = parse_one(meta["spec"])
    if not getattr(strategy, "method", ""):  # PeftStrategy's mark (an isinstance check would import upwards)
        raise UnsafeFileError(f"task module method {meta['spec']!r} is not a parameter-efficient method")
    return strategy


def build_base(meta: dict):
    """The plain base model the module was made for, with a head of the module's class count."""
    from transferlab.models import create_model

    base = meta["base"]
    return create_model(base["model"], int(meta["head"]["num_classes"]), weights=base.get("weights"))


def read_module_tensors(directory: Path, meta: dict) -> dict[str, torch.Tensor]:
    tensors = load_tensors(directory / STATE)
    try:
        listed = set(meta["tensors"]["method"]) | set(meta["tensors"]["batchnorm"]) | set(meta["tensors"]["head"])
    except (KeyError, TypeError):
        raise UnsafeFileError(f"{directory / META}: 'tensors' is not a table of tensor lists") from None
    if set(tensors) != listed:
        raise UnsafeFileError(f"{directory / STATE}: its tensors differ from those {META} lists")
    return tensors


def apply_overrides(model, overrides: dict[str, torch.Tensor]) -> None:
    """Copy values into existing parameters/buffers, addressed by their plain names."""
    state = {plain_name(k): v for k, v in model.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        for name, value in overrides.items():
            if name not in state:
                raise ConfigError(f"task module tensor {name} has no place in this model")
            if state[name].shape != value.shape:
                raise ConfigError(f"task module tensor {name} has shape {tuple(value.shape)}, the model "
                                  f"{tuple(state[name].shape)}")
            state[name].copy_(value)


def head_from(meta: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The module's trained head: rebuilt from its recorded spec (`linear` for modules written before heads
    were pluggable), sized by the recorded feature and class counts, loaded from its `head.*` tensors."""
    from transferlab.models.heads import DEFAULT_HEAD, build_head

    spec = meta["head"].get("spec") or DEFAULT_HEAD
    state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    head = build_head(spec, int(meta["head"]["feature_dim"]), int(meta["head"]["num_classes"]))
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"task module head ({spec}): its tensors do not fit: {exc}".splitlines()[0]) from None
    return head


def _head_spec(head: nn.Module) -> str:
    from transferlab.models.heads import DEFAULT_HEAD

    return head.spec() if hasattr(head, "spec") else DEFAULT_HEAD


def load_task_module(path: str | Path, model=None):
    """A ready model: the module's base (built, or `model` if given and matching) with the module applied."""
    directory, meta = read_meta(path)
    if model is None:
        model = build_base(meta)
    check_base(meta, model, directory)
    strategy = strategy_for(meta)
    tensors = read_module_tensors(directory, meta)
    strategy.add_slot(model, DEFAULT_SLOT)
    strategy.set_active(model, DEFAULT_SLOT)
    overrides = strategy.load_slot(model, DEFAULT_SLOT, directory, tensors)
    overrides.update({k: tensors[k] for k in meta["tensors"]["batchnorm"]})
    apply_overrides(model, overrides)
    device = next(model.parameters()).device
    model.head = head_from(meta, tensors).to(device)
    model.num_classes = model.head.out_features
    model.class_names = list(meta["head"]["classes"])
    model.pooling = meta["head"].get("pooling", model.pooling)
    return model.eval()


def module_summary(path: str | Path) -> dict:
    """What `transferlab modules show/list` prints."""
    directory, meta = read_meta(path)
    sizes = _folder_bytes(directory, list(meta.get("files", [])) + [META])
    total = sum(sizes.values())
    full = meta.get("full_checkpoint_bytes") or 0
    return {
        "path": str(directory), "method": meta["method"], "spec": meta["spec"],
        "run_strategy": meta.get("run_strategy"), "base_model": meta["base"]["model"],
        "architecture": meta["base"]["architecture"], "base_weights": meta["base"].get("weights"),
        "fingerprint": meta["base"]["fingerprint"]["sha256"], "classes": meta["head"]["classes"],
        "trainable_params": meta["trainable_params"], "total_params": meta["total_params"],
        "trainable_share": meta["trainable_params"] / meta["total_params"],
        "bytes": total, "files": sizes, "full_checkpoint_bytes": full,
        "share_of_full_checkpoint": total / full if full else None,
        "mergeable": is_mergeable(meta["method"]), "structure": meta.get("structure", {}),
        "batchnorm_statistics": len(meta["tensors"]["batchnorm"]),
    }


def find_modules(roots: list[str | Path]) -> list[Path]:
    """Module folders under `roots`. Symlinked directories below a root are not entered (os.walk's default):
    a link could pull in folders from anywhere or loop, and a module would be listed under two names. A root
    (or a module folder) named on the command line may itself be a symlink."""
    found = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise ConfigError(f"{root} does not exist")
        found += [Path(folder) for folder, _, names in os.walk(root) if META in names]
    return sorted(set(found))
