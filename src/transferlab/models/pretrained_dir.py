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

import json
import re
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg

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
    """(builder, cfg, weights file or None for random init, the whole JSON) of a pre-trained folder."""
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
        raise ConfigError(f"{cfg_file}: unknown architecture {builder!r}")
    try:
        cfg = PretrainedCfg.from_dict(raw["cfg"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{cfg_file}: a pretrained config without a valid 'cfg' ({exc})") from None
    weights = folder / WEIGHTS_FILE
    if raw.get("has_weights", True):
        if not weights.is_file():
            raise ConfigError(f"{folder} has {CFG_FILE} but its weights {WEIGHTS_FILE} are missing")
        return builder, cfg, weights, raw
    return builder, cfg, None, raw


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
    import tempfile

    from transferlab.safe_io import TEMP_SUFFIX, atomic_write_json, save_tensors

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=TEMP_SUFFIX, dir=folder.parent))
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
