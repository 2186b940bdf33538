"""File I/O that never executes code from a file and never leaves half-written outputs.

- Reading weights: safetensors (whose own parser refuses a header that does not fit the file), or `torch.load(weights_only=True)`,
  which refuses pickles that reference arbitrary callables.
- Writing: to a temporary name in the same folder, flushed and fsynced, then `os.replace`d, so a kill
  leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from transferlab import faults
from transferlab.errors import UnsafeFileError

TEMP_SUFFIX = ".transferlab-tmp"  # distinctive, so remove_stale_temps deletes only our own


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`.

    A kill leaves the old file or the new one (plus, at worst, a stale `.NAME.*.tmp` that nothing reads;
    `remove_stale_temps` clears them). Any error (a full disk) removes the temporary file and leaves `path`
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    faults.on_write("start", path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            faults.on_write("partial", path.name)
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        faults.on_write("during", path.name)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # write()/fsync() errors (a full disk) name no file: name the output
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    faults.on_write("after", path.name)


def temp_folder_beside(path: str | Path) -> Path:
    """A new empty folder `.NAME.<random>.transferlab-tmp` beside `path`, to fill and then rename to `path` (so
    `remove_stale_temps`-style cleanups know it by name), with the permissions `mkdir` would give it: mkdtemp
    makes 0700 folders, and renamed into place they would be private where every other output follows the
    umask."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    os.chmod(folder, 0o777 & ~_umask())
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a killed `atomic_write_bytes` left in `folder`; returns them."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Atomically write tensors as safetensors (contiguous CPU copies; shared storage is split)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata=metadata))


def check_safetensors_header(path: str | Path) -> dict:
    """A safetensors file's header (a JSON object), validated without reading any tensor; UnsafeFileError
    (naming the file) for a file that is not valid safetensors. The checks are safetensors' own, the parser
    `load_file` uses: header length within the file and at most 100 MB, UTF-8 JSON object, known dtypes,
    non-negative integer shapes and offsets, each entry's bytes equal to shape x dtype size (overflow-checked),
    entries contiguous and covering the data exactly (so no overlap, no byte out of bounds). It maps the file
    rather than reading it; every lying header of tests/reliability/test_hostile_files.py is refused this way
    by safetensors 0.4.0 (our lowest supported) and 0.8.0."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except OSError:  # a missing or unreadable file is the caller's OSError, as for any other file
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise UnsafeFileError(f"{path}: not a valid safetensors file: {exc}") from None
    with open(path, "rb") as fh:  # valid: the length fits the file and the bytes are one JSON object
        (header_len,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(header_len))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; UnsafeFileError (naming the file) where its header lies (see
    `check_safetensors_header`: `load_file` makes the same checks before reading any tensor)."""
    try:
        return load_file(str(path))
    except OSError:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise UnsafeFileError(f"{path}: cannot read safetensors: {exc}") from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or from a .pth/.pt/.bin file without running any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UnsafeFileError(f"weights file not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    is_pickle_container = magic.startswith(b"PK") or magic.startswith(b"\x80")  # torch zip or raw pickle
    if path.suffix == ".safetensors" or not is_pickle_container:
        return load_tensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise UnsafeFileError(f"{path}: refused to load (only plain tensors are accepted, nothing was "
                              f"unpickled or run): {_torch_load_reason(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeFileError(f"{path}: not a state dict of tensors")
    return dict(state)


def _torch_load_reason(exc: BaseException) -> str:
    """The informative part of torch.load's refusal, without its advice to retry with weights_only=False."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else "unsupported content"))[:200]
        if "unsupported GLOBAL" in line or "Unsupported global" in line:
            return line[:200]
    if lines and lines[0].startswith("Weights only load failed"):
        return "it holds more than plain tensors"
    return (lines[0] if lines else type(exc).__name__)[:200]
