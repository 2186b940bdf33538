"""Pre-trained folders: a model that `transferlab pretrain` kept, usable as `--model` by every command.

    FOLDER/pretrained_cfg.json   {"format": PRETRAINED_FORMAT, "builder": "resnet10_cifar", "has_weights": true,
                                  "cfg": {PretrainedCfg fields}, "epoch": 4, "source": {...}}
    FOLDER/model.safetensors     the backbone's tensors under timm's names, with the source classifier

`builder` is a timm architecture or a `timm_models.RECIPES` name; `cfg` carries the input size, the normalisation
measured on the source training data and the source classes by name. The weights file's name is fixed here, never
read from the JSON (a path in a file is not trusted). A folder marked `"has_weights": false` is the architecture
with random weights (the `scratch` entry of a pre-training run: the same input pipeline, nothing learnt).

Short form: `RUN@E` is RUN/checkpoints/epoch_E, `RUN@last` the last kept epoch, `RUN@scratch` the random init.
"""
from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models._families import SCRATCH_WEIGHTS, ModelFamily, register_family

PRETRAINED_FORMAT = "transferlab-pretrained-1"
CFG_FILE = "pretrained_cfg.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS = "checkpoints"
INDEX_FILE = "index.json"  # RUN/checkpoints/index.json: the kept epochs, in order, with their source metrics
SCRATCH = "scratch"
_SHORT = re.compile(r"(?P<run>.+)@(?P<which>\d+|last|scratch)")


def epoch_folder_name(epoch: int) -> str:
    return f"epoch_{epoch}"


def resolve(name: str) -> Path | None:
    """The pre-trained folder `name` refers to (a folder path or the RUN@E short form), or None when `name` is
    neither (a registry name, a timm architecture, a Hugging Face folder...)."""
    match = _SHORT.fullmatch(name)
    if match and Path(match["run"]).expanduser().is_dir():
        run = Path(match["run"]).expanduser()
        which = match["which"]
        if which == "last":
            epochs = kept_epochs(run)
            if not epochs:
                raise ConfigError(f"{name}: {run} has no kept checkpoint (no {CHECKPOINTS}/{INDEX_FILE})")
            which = str(epochs[-1])
        folder = run / CHECKPOINTS / (SCRATCH if which == SCRATCH else epoch_folder_name(int(which)))
        if not ((folder / CFG_FILE).is_file() or (folder / WEIGHTS_FILE).is_file()):  # absent, or a user's files only
            raise ConfigError(f"{name}: {folder} is not a kept checkpoint; kept: "
                              f"{', '.join(map(str, kept_epochs(run))) or 'none'}")
        return folder
    path = Path(name).expanduser()
    # ours: our config; or our weights file without any config (a checkpoint that lost its pretrained_cfg.json:
    # read_folder says so). A Hugging Face folder also holds model.safetensors, beside its own config.json.
    if path.is_dir() and ((path / CFG_FILE).is_file()
                          or ((path / WEIGHTS_FILE).is_file() and not (path / "config.json").is_file())):
        return path
    return None


def is_exported(folder: Path) -> bool:
    """A complete export: write_folder writes its config last (a folder may also hold a user's files only)."""
    return (Path(folder) / CFG_FILE).is_file()


def kept_entries(run: Path) -> list[dict]:
    """The index entries of RUN/checkpoints (epoch, folder, source metrics), in epoch order; [] without an index,
    ConfigError when it is damaged."""
    index = Path(run) / CHECKPOINTS / INDEX_FILE
    if not index.is_file():
        return []
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))["epochs"]
        return [{**e, "epoch": int(e["epoch"])} for e in entries]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ConfigError(f"{index}: not a checkpoint index written by transferlab pretrain") from None


def kept_epochs(run: Path) -> list[int]:
    """The epochs kept under RUN/checkpoints, from its index."""
    return [e["epoch"] for e in kept_entries(run)]


def read_folder(folder: Path) -> tuple[str, PretrainedCfg, Path | None, dict]:
    """(builder, cfg, weights file or None for random init, the whole JSON) of a pre-trained folder.

    The config is checked before anything uses it (a kept folder is a file anyone may edit): every field the
    loader and the data pipeline read has its type and range (`_check_cfg`), a folder holding weights must say so
    (`has_weights`), and the weights must be the builder's architecture with the config's classifier
    (`_check_fits`). Each refusal is a ConfigError naming the file and the field."""
    from transferlab.models.timm_models import is_architecture

    cfg_file = folder / CFG_FILE
    if not cfg_file.is_file():
        raise ConfigError(f"{folder} holds weights but no {CFG_FILE} (architecture, input size, normalisation, "
                          f"source classes): it is not a complete pre-trained checkpoint; export it again")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{cfg_file}: not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != PRETRAINED_FORMAT:
        raise ConfigError(f"{cfg_file} is not a transferlab pre-trained config (no format {PRETRAINED_FORMAT!r})")
    builder = raw.get("builder")
    if not isinstance(builder, str) or not is_architecture(builder):
        raise ConfigError(f"{cfg_file}: unknown architecture {_shown(builder)} in 'builder'")
    has_weights = raw.get("has_weights", True)
    if not isinstance(has_weights, bool):
        raise ConfigError(f"{cfg_file}: 'has_weights' must be true or false, got {_shown(has_weights)}")
    if not isinstance(raw.get("cfg"), dict):
        raise ConfigError(f"{cfg_file}: a pretrained config without a valid 'cfg' (an object of its fields)")
    try:
        cfg = PretrainedCfg.from_dict(raw["cfg"])
    except TypeError as exc:
        raise ConfigError(f"{cfg_file}: a pretrained config without a valid 'cfg' ({exc})") from None
    cfg = _check_cfg(cfg_file, builder, cfg)
    weights = folder / WEIGHTS_FILE
    if not has_weights:
        # write_folder removes the weights of a random-init entry: a file here means the flag was edited, and
        # believing it would fine-tune random weights while the user thinks they are the checkpoint's
        if weights.exists():
            raise ConfigError(f"{cfg_file}: 'has_weights' is false, yet the folder holds {WEIGHTS_FILE}; set it "
                              f"to true to use the weights, or remove the file for a random init")
    elif not weights.is_file():
        raise ConfigError(f"{folder} has {CFG_FILE} but its weights {WEIGHTS_FILE} are missing")
    else:
        _check_fits(cfg_file, builder, cfg, weights)
    # after the weights: an edited 'builder' is better named by the weights that do not fit it
    if cfg.architecture != builder:
        raise ConfigError(f"{cfg_file}: 'cfg.architecture' {_shown(cfg.architecture)} is not the folder's "
                          f"'builder' {builder!r}")
    return builder, cfg, weights if has_weights else None, raw


CHANNELS = 3  # the data pipeline feeds RGB images: mean and std hold one value per channel
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")  # what data/_transforms.py resizes with
POOLINGS = ("mean", "cls")


def _check_cfg(cfg_file: Path, builder: str, cfg: PretrainedCfg) -> PretrainedCfg:
    """`cfg` with each field the loader and the data pipeline read checked: one ConfigError naming the file and
    the field otherwise (a negative size or a 1-element mean would fail deep in torch with a traceback, a zero std
    would train on NaN). A timm-style input size [3, side, side] becomes the side."""
    import dataclasses

    from transferlab.data._options import MAX_IMAGE_SIZE

    def refuse(name: str, want: str) -> "NoReturn":  # noqa: F821
        raise ConfigError(f"{cfg_file}: 'cfg.{name}' must be {want}, got {_shown(getattr(cfg, name))}")

    for name in ("name", "architecture", "weights", "license", "source_task", "interpolation", "pooling", "stem",
                 "classifier"):
        if not isinstance(getattr(cfg, name), str):
            refuse(name, "a string")
    if cfg.modality != "image":
        refuse("modality", f"'image' (the builder {builder!r} is an image architecture)")
    side = _image_side(cfg.input_size)
    if side is None or not 8 <= side <= MAX_IMAGE_SIZE:
        refuse("input_size", f"the image side in pixels, an integer from 8 to {MAX_IMAGE_SIZE} (or [{CHANNELS}, "
                             f"side, side])")
    for name in ("mean", "std"):
        values = getattr(cfg, name)
        if not (isinstance(values, tuple) and len(values) == CHANNELS and all(map(_is_finite, values))):
            refuse(name, f"{CHANNELS} finite numbers, one per colour channel")
    if not all(v > 0 for v in cfg.std):
        refuse("std", "positive (the inputs are divided by it)")
    if cfg.interpolation.lower() not in INTERPOLATIONS:
        refuse("interpolation", f"one of {', '.join(INTERPOLATIONS)}")
    if not (_is_finite(cfg.crop_pct) and 0 < cfg.crop_pct <= 1):
        refuse("crop_pct", "a number in (0, 1], the share of the resized image the centre crop keeps")
    if not _is_int(cfg.num_source_classes) or cfg.num_source_classes < 0:
        refuse("num_source_classes", "a whole number >= 0")
    if not (isinstance(cfg.source_classes, tuple) and all(isinstance(c, str) for c in cfg.source_classes)):
        refuse("source_classes", "a list of class names")
    if cfg.source_classes and len(cfg.source_classes) != cfg.num_source_classes:
        raise ConfigError(f"{cfg_file}: 'cfg.source_classes' names {len(cfg.source_classes)} class(es), "
                          f"'cfg.num_source_classes' says {cfg.num_source_classes}")
    if cfg.pooling not in POOLINGS:
        refuse("pooling", f"one of {', '.join(POOLINGS)}")
    if not _is_int(cfg.max_length) or cfg.max_length < 1:
        refuse("max_length", "a whole number >= 1")
    if not isinstance(cfg.notes, dict):
        refuse("notes", "an object")
    return dataclasses.replace(cfg, input_size=side)


def _check_fits(cfg_file: Path, builder: str, cfg: PretrainedCfg, weights: Path) -> None:
    """ConfigError naming `cfg_file` and the field when the weights are not `builder`'s architecture with the
    config's source classifier; read from the file's header, without loading a tensor (UnsafeFileError for a
    header that lies). Loading would otherwise fail with lists of parameter names that do not say which file is
    wrong."""
    from transferlab.models.timm_models import _timm_default_cfg
    from transferlab.safe_io import check_safetensors_header

    shapes = {name: tuple(entry["shape"]) for name, entry in check_safetensors_header(weights).items()
              if name != "__metadata__"}
    classifier = cfg.classifier or _timm_default_cfg(builder).get("classifier", "")
    head = shapes.get(f"{classifier}.weight")
    if head is None or len(head) != 2:
        raise ConfigError(f"{cfg_file}: 'cfg.classifier' {classifier!r} names no linear layer in {weights} (the "
                          f"source classifier: its '{classifier}.weight' is absent or not a matrix)")
    if cfg.num_source_classes != head[0]:
        raise ConfigError(f"{cfg_file}: 'cfg.num_source_classes' is {cfg.num_source_classes}, but the classifier "
                          f"{classifier!r} in {weights} has {head[0]} classes")
    expected = _architecture_shapes(builder, head[0])
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {shapes[k]} (the architecture's is {expected[k]})" for k in expected
             if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        found = "; ".join(f"{what} {_few(names)}" for what, names in (
            ("tensors of another shape:", wrong), ("no", missing), ("tensors the architecture lacks:", unexpected))
            if names)
        raise ConfigError(f"{cfg_file}: 'builder' is {builder!r}, but the weights do not fit {builder}: {weights} "
                          f"has {found}")


@functools.lru_cache(maxsize=8)
def _architecture_shapes(builder: str, classes: int) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in `builder`'s state dict with `classes` source classes."""
    import torch

    from transferlab.models.timm_models import random_net

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation, the global RNG untouched
            net = random_net(builder, classes)
    except Exception:  # noqa: BLE001  (a constructor that computes on its tensors, e.g. .item(), needs real ones)
        with torch.random.fork_rng(devices=[]):  # so that reading a folder never changes a run's random draws
            net = random_net(builder, classes)
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def _image_side(size) -> int | None:
    """The side of an `input_size`: an integer, or timm's [channels, height, width] with equal sides."""
    if isinstance(size, (list, tuple)) and len(size) == 3 and all(map(_is_int, size)) and size[0] == CHANNELS \
            and size[1] == size[2]:
        return size[2]
    return size if _is_int(size) else None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _few(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _shown(value, limit: int = 60) -> str:
    """A value from the file for a one-line message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def folder_cfg(folder: Path) -> PretrainedCfg:
    return read_folder(folder)[1]


def build_from_folder(folder: Path, num_classes: int, weights: str | None = None, head: str = "linear"):
    """The folder's model with a new head; `weights` replaces the folder's own (a grid's scratch init)."""
    from transferlab.models.timm_models import from_timm

    builder, cfg, own, _ = read_folder(folder)
    chosen = weights or (str(own) if own is not None else None)
    return from_timm(builder, num_classes, weights=chosen, head=head, cfg=cfg)


def write_folder(folder: Path, builder: str, cfg: PretrainedCfg, state: dict | None, extra: dict) -> None:
    """Write a complete pre-trained folder, or none: files go to a temporary sibling renamed into place."""
    import os
    import shutil

    from transferlab.safe_io import atomic_write_json, save_tensors, temp_folder_beside

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder_beside(folder)
    try:
        if state is not None:
            save_tensors(tmp / WEIGHTS_FILE, state)
        atomic_write_json(tmp / CFG_FILE, {"format": PRETRAINED_FORMAT, "builder": builder,
                                           "has_weights": state is not None, "cfg": cfg.to_dict(), **extra})
        if folder.is_dir() and not folder.is_symlink():
            # an earlier export of the same epoch (a resumed run writes the same tensors), or a folder that
            # --overwrite emptied of our files and left with the user's: ours are replaced inside it, the config
            # last (it marks the folder complete, `is_exported`), and the user's files stay
            (folder / CFG_FILE).unlink(missing_ok=True)
            if state is None:
                (folder / WEIGHTS_FILE).unlink(missing_ok=True)
            else:
                os.replace(tmp / WEIGHTS_FILE, folder / WEIGHTS_FILE)
            os.replace(tmp / CFG_FILE, folder / CFG_FILE)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@register_family
class PretrainedFolderFamily(ModelFamily):
    """A folder kept by `transferlab pretrain` (a path, or RUN@EPOCH / RUN@last / RUN@scratch)."""

    name = "pretrained"
    order = 20

    def claims(self, name: str) -> bool:
        return resolve(name) is not None

    def cfg(self, name: str, weights: str | None = None) -> PretrainedCfg:
        return folder_cfg(resolve(name))

    def build(self, name: str, num_classes: int, weights: str | None = None, head: str = "linear"):
        return build_from_folder(resolve(name), num_classes, weights=weights, head=head)

    def reproducible_start(self, name: str) -> bool:
        try:
            return read_folder(resolve(name))[2] is not None  # a pretrain run's scratch entry has no weights
        except ConfigError:
            return True

    def scratch(self, name: str) -> tuple[str, str]:
        # its architecture and input config, random weights
        return SCRATCH_WEIGHTS, f"{name}'s architecture with random weights"

    def random_state(self, name: str, seed: int):
        from transferlab.models.timm_models import random_state

        return random_state(read_folder(resolve(name))[0], seed)

    def path(self, name: str) -> Path | None:
        return resolve(name)
