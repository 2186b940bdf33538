"""Where transferlab may write, and what it may delete.

- An output path is never empty (an unset shell variable), never an existing file where a folder is meant (or
  a folder where a file is meant), and never equal to, inside, or containing one of the command's inputs; two
  outputs of one command are never the same path, and one lies inside another only where that is by design
  (NESTED_BY_DESIGN: a --cache-dir or a --track store inside --out). The rule holds for paths that do not exist
  yet: each is compared as it will be when created (the nearest existing ancestor with its symlinks resolved,
  the rest appended, `..`, `./` and trailing slashes applied). `check_outputs` applies it to all the outputs of
  a command at once, before any work.
- A folder is written into only when it is new, empty, or holds what transferlab wrote there: its marker file
  (a run's `config.json`, a comparison's `grid.json`, a task module's metadata) carries transferlab's format
  key. A folder with a `config.json` of its own, or any other file, is someone else's.
- What `--overwrite` deletes is the list of names that kind of folder is made of, nothing else; a file it does
  not know is kept (and logged), and a sub-folder is removed only once it is empty.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.safe_io import TEMP_SUFFIX

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder transferlab writes: its marker file, the formats that marker may carry, and every
    name it is made of (files at the top, and the files of each sub-folder)."""

    name: str
    marker: str
    formats: frozenset[str]
    files: frozenset[str]
    folders: dict[str, frozenset[str]] = field(default_factory=dict)
    residue: frozenset[str] = frozenset()  # files a failed or killed start may leave without the marker
    # sub-folders of a folder above whose names match a pattern: {"checkpoints": (r"epoch_\d+|scratch", files)}
    nested: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)

    def owns(self, relative: str) -> bool:
        parts = Path(relative).parts
        if len(parts) == 1:
            return parts[0] in self.files or parts[0] in self.folders or _is_temp(parts[0])
        if len(parts) == 2 and parts[0] in self.folders:
            return parts[1] in self.folders[parts[0]] or _is_temp(parts[1]) or self._nested_name(*parts)
        if len(parts) == 3 and self._nested_name(parts[0], parts[1]):
            return parts[2] in self.nested[parts[0]][1] or _is_temp(parts[2])
        return False

    def _nested_name(self, folder: str, name: str) -> bool:
        import re

        return folder in self.nested and re.fullmatch(self.nested[folder][0], name) is not None


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def real(path: str | Path) -> Path:
    """The path as it is, or will be once created: `~` expanded, the nearest existing ancestor with its symlinks
    resolved, the parts that do not exist yet appended, `.` and `..` applied (os.path.realpath, non-strict)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def existing_ancestor(path: str | Path) -> Path:
    """The nearest part of `path` (resolved as by `real`) that exists: where creating it starts."""
    resolved = real(path)
    for candidate in (resolved, *resolved.parents):
        if candidate.exists():
            return candidate
    return Path(resolved.anchor)


# Options that name something a command writes. An entry of check_output_path's `inputs` named so (the run
# folder a --cache-dir is checked against) is taken as an output: compared even before it exists.
OUTPUT_OPTIONS = frozenset({"--out", "--cache-dir", "--export-clean", "--track"})
# (inner, outer): an output that may lie inside another by design. The frozen-prefix cache and a tracker's store
# may live in the run or grid folder; a grid's cells (runs/) are its own sub-folder. Anything else nested, and
# any two outputs on the same path, is refused.
NESTED_BY_DESIGN = frozenset({("--cache-dir", "--out"), ("--track", "--out"), ("--out/runs", "--out")})


def _option(name: str) -> str:
    """`--track mlflow:URI` -> `--track`: the option an output's name starts with."""
    return name.split()[0] if name.split() else name


def is_output_option(name: str) -> bool:
    return _option(name).split("/")[0] in OUTPUT_OPTIONS


def _named(option: str, path: object) -> str:
    """`--out DIR`, or `--track SPEC (writing PATH)` where the option's own text is more than a flag."""
    return f"{option} (writing {path})" if len(option.split()) > 1 else f"{option} {path}"


def _is_path(value: object) -> bool:
    return isinstance(value, (str, Path)) and bool(str(value).strip())


def overlap(a: str | Path, b: str | Path) -> str | None:
    """'equal', 'inside' (a inside b), 'contains' (b inside a) or None."""
    ra, rb = real(a), real(b)
    if ra == rb:
        return "equal"
    if rb in ra.parents:
        return "inside"
    if ra in rb.parents:
        return "contains"
    return None


def check_output_path(path: str | Path | None, option: str = "--out", inputs: dict[str, object] | None = None,
                      expect: str = "folder", outputs: dict[str, object] | None = None) -> Path:
    """The output path, resolved as it will be written, or a ConfigError naming the option: empty, the wrong kind
    of thing, overlapping an input, or overlapping another output. `inputs` maps an option to a path it reads (or
    to None / a non-path value such as 'digits'); an input that does not exist is no path and is skipped (reading
    it fails on its own). `outputs` maps an option to a path the same command writes: compared whether it exists
    or not; equal is refused, nested only where NESTED_BY_DESIGN allows it. Callers write to the returned path,
    so the checks hold for what is written."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{option} is empty (an unset shell variable?): give a {expect} path")
    text = str(path)
    if any(not ch.isprintable() for ch in text):
        raise ConfigError(f"{option} {text!r} holds control characters")
    out = Path(text).expanduser()
    resolved = real(out)  # `a/x/..` is `a` even when a/x does not exist; Path.is_dir would say no
    if expect == "folder" and resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"{option} {out} is an existing file, not a folder")
    if expect == "file" and (resolved.is_dir() or out.name in ("", ".", "..") or text.endswith(("/", os.sep))):
        raise ConfigError(f"{option} {out} is a folder; give a file name")
    for parent in resolved.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{option} {out}: {parent} is a file, not a folder")
    others = dict(outputs or {})
    what = _named(option, out)
    for name, value in (inputs or {}).items():
        if is_output_option(name):  # a caller's run folder among the paths to keep clear of: an output
            others.setdefault(name, value)
            continue
        if not _is_path(value) or not Path(str(value)).expanduser().exists():
            continue
        where = overlap(out, value)
        if where == "equal":
            raise ConfigError(f"{what} is {name} itself; write the output elsewhere")
        if where == "inside":
            raise ConfigError(f"{what} is inside {name} {value}; write the output outside it")
        if where == "contains":
            raise ConfigError(f"{what} contains {name} {value}; write the output elsewhere")
    for name, value in others.items():
        if name == option or not _is_path(value):
            continue
        where = overlap(out, value)  # never skipped: neither path has to exist yet
        other = _named(name, value)
        if where == "equal":
            raise ConfigError(f"{what} is the same path as {other}; give each output its own path")
        if where == "inside" and (_option(option), _option(name)) not in NESTED_BY_DESIGN:
            raise ConfigError(f"{what} is inside {other}; write it outside")
        if where == "contains" and (_option(name), _option(option)) not in NESTED_BY_DESIGN:
            raise ConfigError(f"{what} contains {other}; write it elsewhere")
    return resolved  # what is checked is what gets written: `a/x/..` and symlinks resolved once, here


def check_outputs(outputs: dict[str, object], inputs: dict[str, object] | None = None) -> dict[str, Path]:
    """Every output of one command, by option, through check_output_path against the inputs and every other
    output, before any work: the resolved paths, by option. A value is a path (a folder), (path, "file" |
    "folder"), or None (not given: skipped)."""
    wanted = {name: value if isinstance(value, tuple) else (value, "folder") for name, value in outputs.items()
              if value is not None}
    paths = {name: path for name, (path, _) in wanted.items()}
    return {name: check_output_path(path, name, inputs, expect,
                                    {other: p for other, p in paths.items() if other != name})
            for name, (path, expect) in wanted.items()}


def read_marker(folder: Path, kind: FolderKind) -> dict | None:
    """The marker file's JSON object when it carries one of the kind's formats, else None."""
    marker = folder / kind.marker
    if not marker.is_file():
        return None
    try:
        obj = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(obj, dict) and obj.get("format") in kind.formats:
        return obj
    return None


def folder_state(folder: str | Path, kind: FolderKind) -> str:
    """'new' (missing or empty, or holding only the kind's start-up residue), 'ours' (the marker carries the
    kind's format) or 'foreign' (anything else: a file, or a folder of someone else's files)."""
    folder = Path(folder)
    if not folder.exists():
        return "new"
    if not folder.is_dir():
        return "foreign"
    if read_marker(folder, kind) is not None:
        return "ours"
    names = [p.name for p in folder.iterdir()]
    if all(n in kind.residue or _is_temp(n) for n in names):
        return "new"
    return "foreign"


def foreign_message(folder: Path, kind: FolderKind, option: str = "--out") -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:4] if folder.is_dir() else []
    listed = f" ({', '.join(names)}{', ...' if len(names) == 4 else ''})" if names else ""
    return (f"{option} {folder} holds files that are not a transferlab {kind.name}{listed}; choose a new or empty "
            f"folder (nothing was changed)")


def require_writable(folder: str | Path, kind: FolderKind, overwrite: bool, option: str = "--out") -> str:
    """folder_state, with 'foreign' raised as a ConfigError, and 'ours' too unless `overwrite`."""
    folder = Path(folder)
    state = folder_state(folder, kind)
    if state == "foreign":
        raise ConfigError(foreign_message(folder, kind, option))
    if state == "ours" and not overwrite:
        raise ConfigError(f"{option} {folder} already holds a transferlab {kind.name}; choose another {option} or "
                          f"pass --overwrite")
    return state


def remove_owned(folder: str | Path, kind: FolderKind) -> list[Path]:
    """Delete the files `kind` is made of (and temporaries of interrupted writes) in a folder that is ours;
    sub-folders go only when nothing else is left in them. Returns what was removed."""
    folder = Path(folder)
    if folder_state(folder, kind) == "foreign":  # never reached through the commands; a last guard
        raise ConfigError(foreign_message(folder, kind))
    removed: list[Path] = []
    for sub, names in kind.folders.items():
        d = folder / sub
        if d.is_symlink() or not d.is_dir():
            continue
        if sub in kind.nested:
            for child in sorted(d.iterdir()):
                if not child.is_symlink() and child.is_dir() and (kind._nested_name(sub, child.name)
                                                                   or _is_temp(child.name)):
                    removed += _unlink_names(child, kind.nested[sub][1])
                    _rmdir_if_empty(child)
        removed += _unlink_names(d, names)
        _rmdir_if_empty(d)
    removed += _unlink_names(folder, kind.files | kind.residue)
    return removed


def _unlink_names(folder: Path, names: Iterable[str]) -> list[Path]:
    removed = []
    for p in sorted(folder.iterdir()):
        if (p.name in names or _is_temp(p.name)) and (p.is_file() or p.is_symlink()):
            p.unlink()
            removed.append(p)
    kept = [p.name for p in folder.iterdir() if p.name not in names]
    if kept:
        logger.info("kept %s in %s: not written by transferlab", ", ".join(sorted(kept)[:5]), folder)
    return removed


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: a file that is not ours stays, and so does its folder
        pass


# ---- the folders transferlab writes -------------------------------------------------------------------------
RUN_FORMAT = "transferlab-run-1"
MODULE_FORMAT = "transferlab-task-module-1"
GRID_FORMAT = "transferlab-compare-1"
MODULE_FILES = frozenset({"transferlab_module.json", "module.safetensors", "adapter_config.json",
                          "adapter_model.safetensors"})

# A run (finetune, adapt-bn, modules merge): config.json marks it; the rest is what those commands write.
RUN_FOLDER = FolderKind(
    name="run", marker="config.json", formats=frozenset({RUN_FORMAT}),
    files=frozenset({"config.json", "metrics.json", "history.jsonl", "error.json", "adabn.json", "adapt.json", "merge.json",
                     "pretrain.json", "examples.safetensors",
                     "tracking.json"}),  # the run's MLflow run ids (tracking.live)
    folders={"checkpoint": frozenset({"last.safetensors", "best.safetensors"}), "task_module": MODULE_FILES,
             "checkpoints": frozenset({"index.json"})},  # pretrain's kept epochs (models.pretrained_dir)
    nested={"checkpoints": (r"epoch_\d+|scratch", frozenset({"pretrained_cfg.json", "model.safetensors"}))},
    residue=frozenset({"error.json"}))  # a grid cell that failed before its config was written
# A task module exported by `modules export`: the module's files and a README.
MODULE_EXPORT = FolderKind(name="task module export", marker="transferlab_module.json",
                           formats=frozenset({MODULE_FORMAT}), files=MODULE_FILES | {"README.md"})

# A comparison (compare): grid.json marks it; its cells are runs under runs/<strategy>/<seed>/; feature_cache/
# holds the frozen-prefix entries (<sha256>.safetensors) that `compare --jobs N` worker processes share.
GRID_FOLDER = FolderKind(
    name="comparison", marker="grid.json", formats=frozenset({GRID_FORMAT}),
    files=frozenset({"grid.json", "report.md", "report.html", "results.json", "results.csv", "runs.csv",
                     "tracking.json"}),  # the grid's parent run ids (tracking.live)
    folders={"runs": frozenset(), "scratch_init": frozenset(), "plots": frozenset(), "feature_cache": frozenset(),
             "tuning": frozenset(), "tuned": frozenset()})  # --tune: its studies and trials, the tuned runs


# A contamination check (contamination): summary.json marks it and is written last; matches.csv's columns are read
# back by `evaluate/compare --contamination`. No residue: a folder is a check's only by its summary.json (a user's
# own matches.csv or contamination.html is theirs), so a check killed before its summary leaves a folder that a
# re-run refuses as foreign (choose another --out); nothing of the user's is ever taken for ours.
CONTAMINATION_FORMAT = "transferlab-contamination-1"
CONTAMINATION_COLUMNS = ("target_id", "source_id", "score", "method", "dirty")
CONTAMINATION_FOLDER = FolderKind(
    name="contamination check", marker="summary.json", formats=frozenset({CONTAMINATION_FORMAT}),
    files=frozenset({"summary.json", "matches.csv", "contamination.html"}))

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_plot_path(path: str | Path | None, option: str = "--plot", inputs: dict[str, object] | None = None) \
        -> Path | None:
    """A PNG output: an existing file is replaced only when it is a PNG (a plot written before)."""
    if path is None:
        return None
    out = check_output_path(path, option, inputs, expect="file")
    if out.is_file():
        with open(out, "rb") as fh:
            if fh.read(8) != PNG_MAGIC:
                raise ConfigError(f"{option} {out} exists and is not a PNG image; it is not replaced")
    return out

# A lab (lab run NAME): lab.json marks it (written first: what was asked); result.json is written last. Its runs
# are ordinary run folders under runs/, its own measurements under measures/, data it builds under data/.
LAB_FORMAT = "transferlab-lab-1"
LAB_FOLDER = FolderKind(
    name="lab", marker="lab.json", formats=frozenset({LAB_FORMAT}),
    files=frozenset({"lab.json", "result.json", "figure.png", "README.md"}),
    folders={"runs": frozenset(), "measures": frozenset(), "data": frozenset(), "weights": frozenset()})
# Every lab (lab run all): labs.json marks it; one lab folder per lab, and the page.
LABS_FOLDER = FolderKind(name="labs", marker="labs.json", formats=frozenset({LAB_FORMAT}),
                         files=frozenset({"labs.json", "labs.md", "labs.html"}))
