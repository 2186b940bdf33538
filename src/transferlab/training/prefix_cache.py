"""The frozen-prefix cache: what a model's frozen first depth groups compute, computed once.

When the first k depth groups stay frozen for an epoch (`linear_probe`, `freeze:k`, `lp_ft`'s probe phase,
`gradual_unfreeze`'s early phases) and the inputs are not augmented, their output is a fixed function of each
example: the trainer runs frozen groups in eval mode (no dropout, stored BatchNorm statistics), so
h = forward_until(x, k - 1) does not change from epoch to epoch. It is computed once per split in inference
mode, and the epoch trains `forward_from(h, k - 1)`; with the whole backbone frozen the pooled features are
stored and only the head runs. A careful user writes this by hand ("features once, then a classifier"); no
maintained library does it inside a general training loop, so it is written here.

An entry's key is a hash of what it is computed from: the frozen groups' weights and buffers, the cut, the
precision and memory format, and a fingerprint of the split (its files, transforms and tokenizer:
`dataset.fingerprint()`). An entry is therefore never asked for by anything it was not computed from, and one
`FeatureStore` serves every run that asks for the same thing: the seeds of a grid, and `lp_ft`'s probe phase
after `linear_probe`.

Entries (dict of CPU tensors, rows in dataset order, unreadable examples left out):
    "index"  (N,) long   dataset index of each row        "labels" (N,) long
    "features" (N, D)                                     whole backbone frozen: the head's input
    "h" (N, ...)                                          image models: group k-1's output
    "hidden" (N, T, H), "attention_mask" (N, T)           text models, padded to the split's longest text on
                                                          the side the tokenizer pads (left or right)

A key names what an entry should hold, not what a file holds: whoever can write a `--cache-dir` could put
other numbers under it. So a file carries, in its safetensors metadata (`entry_metadata`), its key, the split's
fingerprint, the numbers of examples and classes, each tensor's dtype and shape, the index and label ranges and
a sha256 over all of that and the tensor bytes, and the reader checks a file against what it knows itself
(`Expected`: the split, its labels, the head's input width, and a few rows computed anew) before using it
(`read_entry`). A file that fails any check is logged at WARNING with the reason, not used, computed again and
replaced. docs/reliability.md says what the checks catch and what they cannot.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from transferlab.nn_utils import to_device

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 2 * 2**30
ENTRY_FORMAT = "transferlab-prefix-cache-2"  # part of every key: another format's files are never looked up
SPOT_ROWS = 8  # rows of a file that the reader computes anew and compares (`Expected.fresh_rows`)
# Largest |stored - fresh| / |fresh| per row that still counts as the same row: the stored rows were computed in
# batches of another size, which may change the last bits of a sum (on the tests' CPU: not at all), more where
# a GPU's convolutions round to TF32 (cuDNN's default) and more again under 16-bit autocast. Generous on
# purpose: a false alarm costs a recomputation in every new process; zeroed, scaled or swapped rows differ by ~1.
SPOT_TOLERANCE = {torch.float64: 1e-2, torch.float32: 1e-2, torch.bfloat16: 1e-1, torch.float16: 1e-1}
OUTPUT_NAMES = ("features", "h", "hidden", "attention_mask")
OUTPUT_SETS = {("features",), ("h",), ("attention_mask", "hidden")}  # sorted

# sha256 of each file this process wrote (or read and checked), by resolved path: a file that changes under a
# running process is caught even when its own digest was rewritten to match.
_KNOWN_FILES: dict[str, str] = {}


class BadEntry(ValueError):
    """A cache file that is not what its key asks for; the message says why."""


@dataclass(frozen=True)
class Expected:
    """What the reader of an entry knows without it, checked against every file read from a folder and written
    into every file's metadata. `width`, `targets` and `fresh_rows` are None where the reader cannot tell."""

    fingerprint: str  # split_fingerprint of the split
    examples: int  # len(split)
    classes: int  # the model's output classes: integer labels lie in [0, classes)
    outputs: tuple[str, ...]  # ("features",) | ("h",) | ("hidden", "attention_mask")
    width: int | None = None  # "features": D, the head's input width
    targets: Sequence[int] | None = None  # the split's labels in dataset order: row i's label is targets[index[i]]
    fresh_rows: Callable[[list[int]], dict[str, torch.Tensor]] | None = None  # dataset rows -> an entry of them


class FeatureStore:
    """Cache entries by key: in memory up to `memory_bytes` (least recently used dropped first) and, when
    `folder` is given, also written there as safetensors files (`<key>.safetensors`), so that an entry too
    large for memory, a resumed grid and parallel grid processes still find it. Entries in memory are this
    process's own and used as they are; a file is used only after `read_entry` found it to be what `expect`
    describes, and a file that is not is replaced by the next `put`. Nothing else in the folder is touched."""

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY_BYTES, folder: str | Path | None = None):
        self.memory_bytes = memory_bytes
        self.folder = Path(folder) if folder is not None else None
        self._entries: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path | None:
        return self.folder / f"{key}.safetensors" if self.folder is not None else None

    def get(self, key: str, expect: Expected | None = None) -> dict[str, torch.Tensor] | None:
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                entry = read_entry(path, key, expect)
            except BadEntry as exc:  # never used; the caller computes it and `put` replaces the file
                logger.warning("%s: not a usable cache entry (%s); computing it again, to replace the file", path,
                               exc)
            else:
                self._keep(key, entry)
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def put(self, key: str, entry: dict[str, torch.Tensor], expect: Expected | None = None) -> bool:
        """Store an entry; False when it fits neither in memory nor on disk (no folder)."""
        kept = self._keep(key, entry)
        path = self._path(key)
        if path is not None:
            from transferlab.safe_io import save_tensors

            path.parent.mkdir(parents=True, exist_ok=True)
            metadata = entry_metadata(key, entry, expect)
            save_tensors(path, entry, metadata=metadata)
            _KNOWN_FILES[str(path.resolve())] = metadata["sha256"]
            return True
        return kept

    def _keep(self, key: str, entry: dict[str, torch.Tensor]) -> bool:
        size = entry_bytes(entry)
        if size > self.memory_bytes:
            return False
        while self._entries and self._bytes + size > self.memory_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= entry_bytes(dropped)
        self._entries[key] = entry
        self._bytes += size
        return True


# ---- what a file says about itself, and the checks -------------------------------------------------------
def entry_metadata(key: str, entry: dict[str, torch.Tensor], expect: Expected | None = None) -> dict[str, str]:
    """The safetensors metadata (str -> str) written with an entry: what it was computed for, what it holds,
    and "sha256" over both (`entry_digest`)."""
    metadata = {
        "format": ENTRY_FORMAT,
        "key": key,
        "fingerprint": expect.fingerprint if expect else "",
        "examples": str(expect.examples) if expect else "",
        "classes": str(expect.classes) if expect else "",
        "tensors": json.dumps({name: [_dtype(t), list(t.shape)] for name, t in sorted(entry.items())}),
        "index_range": json.dumps(_range(entry.get("index"))),
        "label_range": json.dumps(_range(entry.get("labels"))),
    }
    metadata["sha256"] = entry_digest(entry, metadata)
    return metadata


def entry_digest(entry: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the metadata (but its "sha256") and each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for name, tensor in sorted(entry.items()):
        digest.update(f"|{name}|{_dtype(tensor)}|{list(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def read_entry(path: Path, key: str, expect: Expected | None = None) -> dict[str, torch.Tensor]:
    """The entry in `path` if it is what `key` and `expect` describe, else BadEntry naming the first thing
    that is not. A file this process wrote must still have the digest it was written with; any other file is
    also compared, on SPOT_ROWS random rows, with those rows computed anew (`expect.fresh_rows`)."""
    entry, metadata = _load(path)
    _check_metadata(metadata, key, expect)
    _check_tensors(entry, metadata, expect)
    digest = entry_digest(entry, metadata)
    if digest != metadata["sha256"]:
        raise BadEntry(f"sha256 of its content is {digest[:12]}..., its metadata says {metadata['sha256'][:12]}...")
    _check_rows(entry, expect)
    name = str(path.resolve())
    known = _KNOWN_FILES.get(name)
    if known is not None and known != digest:
        raise BadEntry(f"not the entry this process wrote there (sha256 {digest[:12]}..., written "
                       f"{known[:12]}...)")
    if known is None and expect is not None and expect.fresh_rows is not None:
        _spot_check(entry, expect)
    _KNOWN_FILES[name] = digest
    return entry


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors, copied into this process's memory before anything is checked (safetensors maps the file: the
    bytes checked must be the bytes used, whatever happens to the file later), and metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:  # safetensors' parser: a lying header is refused
            metadata = dict(fh.metadata() or {})
            return {name: fh.get_tensor(name).clone() for name in fh.keys()}, metadata
    except OSError as exc:
        raise BadEntry(f"cannot be read: {exc}") from None
    except Exception as exc:  # safetensors raises its own error types (a torn or foreign file)
        raise BadEntry(f"not a valid safetensors file: {exc}") from None


def _check_metadata(metadata: dict[str, str], key: str, expect: Expected | None) -> None:
    if metadata.get("format") != ENTRY_FORMAT:
        raise BadEntry(f"format {metadata.get('format')!r}, not {ENTRY_FORMAT!r}")
    missing = [f for f in ("key", "fingerprint", "examples", "classes", "tensors", "index_range", "label_range",
                           "sha256") if f not in metadata]
    if missing:
        raise BadEntry(f"metadata without {', '.join(missing)}")
    if metadata["key"] != key:
        raise BadEntry(f"it is the entry of key {metadata['key'][:12]}..., not of {key[:12]}...")
    if expect is None:
        return
    if metadata["fingerprint"] != expect.fingerprint:
        raise BadEntry("computed for another split (fingerprint "
                       f"{metadata['fingerprint'][:12]}..., this split's is {expect.fingerprint[:12]}...)")
    for name, value in (("examples", expect.examples), ("classes", expect.classes)):
        if metadata[name] != str(value):
            raise BadEntry(f"{metadata[name]} {name} in its metadata, {value} here")


def _check_tensors(entry: dict[str, torch.Tensor], metadata: dict[str, str], expect: Expected | None) -> None:
    """Names, dtypes and shapes: as the metadata records them, and as the reader expects them."""
    recorded = {name: [_dtype(t), list(t.shape)] for name, t in sorted(entry.items())}
    try:
        said = json.loads(metadata["tensors"])
    except ValueError:
        said = None
    if recorded != said:
        raise BadEntry(f"tensors {recorded}, its metadata says {metadata['tensors']}")
    outputs = sorted(name for name in entry if name in OUTPUT_NAMES)
    if sorted(entry) != sorted(["index", "labels", *outputs]) or (outputs and tuple(outputs) not in OUTPUT_SETS):
        raise BadEntry(f"unexpected tensors {sorted(entry)}")
    index, labels = entry["index"], entry["labels"]
    if index.dim() != 1 or index.dtype != torch.long:
        raise BadEntry(f"index of dtype {_dtype(index)} and shape {list(index.shape)}, not (N,) int64")
    rows = index.shape[0]
    if any(t.dim() == 0 or t.shape[0] != rows for t in entry.values()):
        raise BadEntry("tensors with different numbers of rows")
    if labels.dim() != 1 or not (labels.dtype == torch.long or labels.is_floating_point()):
        raise BadEntry(f"labels of dtype {_dtype(labels)} and shape {list(labels.shape)}")
    if rows and not outputs:
        raise BadEntry("rows without outputs")
    for name, tensor in (("index", index), ("label", labels)):
        if metadata[f"{name}_range"] != json.dumps(_range(tensor)):
            raise BadEntry(f"{name} range {_range(tensor)}, its metadata says {metadata[f'{name}_range']}")
    if expect is None:
        return
    if rows and outputs != sorted(expect.outputs):
        raise BadEntry(f"outputs {outputs}, the reader needs {sorted(expect.outputs)}")
    for name in outputs:
        if name != "attention_mask" and not entry[name].is_floating_point():
            raise BadEntry(f"{name} of dtype {_dtype(entry[name])}, not a floating-point type")
    if "features" in entry and (entry["features"].dim() != 2 or
                                (expect.width is not None and entry["features"].shape[1] != expect.width)):
        raise BadEntry(f"features of shape {list(entry['features'].shape)}; the head takes (N, {expect.width})")
    if "hidden" in entry and (entry["hidden"].dim() != 3 or entry["attention_mask"].shape != entry["hidden"].shape[:2]):
        raise BadEntry(f"hidden {list(entry['hidden'].shape)} and attention_mask "
                       f"{list(entry['attention_mask'].shape)} do not fit together")


def _check_rows(entry: dict[str, torch.Tensor], expect: Expected | None) -> None:
    """Indices: in [0, examples), increasing (dataset order, so each once); labels: in [0, classes) and the
    dataset's own, where the reader knows them."""
    index, labels = entry["index"], entry["labels"]
    if index.numel() and int(index.min()) < 0:
        raise BadEntry(f"dataset index {int(index.min())} is negative")
    if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):
        raise BadEntry("dataset indices repeated or out of order")
    if expect is None:
        return
    if index.numel() and int(index.max()) >= expect.examples:
        raise BadEntry(f"dataset index {int(index.max())} outside the split's {expect.examples} examples")
    if labels.dtype == torch.long and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= expect.classes:
            raise BadEntry(f"labels from {low} to {high}, outside the {expect.classes} classes [0, {expect.classes})")
    if expect.targets is not None:
        own = torch.as_tensor(expect.targets, dtype=torch.long)[index]
        if labels.dtype != torch.long or not torch.equal(labels, own):
            wrong = int((labels.to(torch.long) != own).sum()) if labels.dtype == torch.long else labels.numel()
            raise BadEntry(f"labels of {wrong} of {labels.numel()} rows are not the dataset's")


def _spot_check(entry: dict[str, torch.Tensor], expect: Expected) -> None:
    """SPOT_ROWS random dataset rows computed anew: present in the entry exactly when readable, with the same
    label, dtypes, row shapes and (to SPOT_TOLERANCE) values. Rows are drawn from the operating system's
    randomness, not torch's, so checking changes no run's random stream."""
    rows = sorted(random.SystemRandom().sample(range(expect.examples), min(SPOT_ROWS, expect.examples)))
    if not rows:
        return
    fresh = expect.fresh_rows(rows)
    index = entry["index"]
    for row in rows:
        at = int(torch.searchsorted(index, row)) if index.numel() else 0
        stored = at < index.numel() and int(index[at]) == row
        found = (fresh["index"] == row).nonzero().flatten()
        if found.numel() == 0:
            if stored:
                raise BadEntry(f"dataset row {row} is in the entry but cannot be read now")
            continue
        if not stored:
            raise BadEntry(f"dataset row {row} is readable but missing from the entry")
        f = int(found[0])
        if entry["labels"].dtype != fresh["labels"].dtype:
            raise BadEntry(f"labels of dtype {_dtype(entry['labels'])}, the data gives {_dtype(fresh['labels'])}")
        if entry["labels"][at] != fresh["labels"][f]:
            raise BadEntry(f"dataset row {row} has label {entry['labels'][at].item()}, its own is "
                           f"{fresh['labels'][f].item()}")
        masks = (entry["attention_mask"][at].bool(), fresh["attention_mask"][f].bool()) if "attention_mask" in fresh \
            else None
        for name in fresh:
            if name not in ("index", "labels"):
                if name not in entry:
                    raise BadEntry(f"no {name}, which the model computes")
                _compare_row(row, name, entry[name][at], fresh[name][f], masks)


def _compare_row(row: int, name: str, mine: torch.Tensor, theirs: torch.Tensor,
                 masks: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """One stored row against the same row computed anew. Text rows (T, ...) are padded to other lengths (the
    split's longest text, the sample's), on the tokenizer's side: only the real tokens (`masks`: the stored
    row's and the fresh row's) are compared."""
    if mine.dtype != theirs.dtype:
        raise BadEntry(f"{name} of dtype {_dtype(mine)}, the model computes {_dtype(theirs)}")
    if masks is not None:
        length = theirs.shape[0]
        if mine.shape[1:] != theirs.shape[1:] or mine.shape[0] < length:
            raise BadEntry(f"{name} rows of shape {list(mine.shape)}, the model computes {list(theirs.shape)}")
        if name == "attention_mask":
            if not _padded_from(mine, theirs):
                raise BadEntry(f"dataset row {row}: its attention_mask is not its text's")
            return
        mine, theirs = mine[masks[0]], theirs[masks[1]]
        if mine.shape != theirs.shape:
            raise BadEntry(f"dataset row {row}: {mine.shape[0]} tokens in its {name}, its text has {theirs.shape[0]}")
    elif mine.shape != theirs.shape:
        raise BadEntry(f"{name} rows of shape {list(mine.shape)}, the model computes {list(theirs.shape)}")
    error, scale = (mine.double() - theirs.double()).norm(), theirs.double().norm()
    if not bool(error <= SPOT_TOLERANCE.get(theirs.dtype, 1e-1) * scale + 1e-6):
        raise BadEntry(f"dataset row {row}: its {name} values differ from what the model computes "
                       f"(relative difference {float(error / max(scale, 1e-12)):.3g})")


def _padded_from(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether the stored (T,) mask row is the fresh one with zeros added after it (right padding) or before it
    (left padding)."""
    length, extra = theirs.shape[0], mine.shape[0] - theirs.shape[0]
    return (torch.equal(mine[:length], theirs) and not mine[length:].any()) or \
        (torch.equal(mine[extra:], theirs) and not mine[:extra].any())


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _range(t: torch.Tensor | None) -> list:
    if t is None or t.numel() == 0:
        return []
    return [t.min().item(), t.max().item()]


def entry_bytes(entry: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values())


def frozen_prefix(model, trainable: set[str] | None) -> int:
    """k: how many leading backbone depth groups have parameters and none of them trains (0..K)."""
    if trainable is None:
        return 0
    k = 0
    for params in model.grouped_parameters()[:model.num_backbone_groups]:
        if not params or any(name in trainable for name, _ in params):
            break
        k += 1
    return k


def prefix_digest(model, k: int) -> str:
    """sha256 of the state (weights and buffers) that h_k depends on: everything outside the groups >= k."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        try:
            if model.group_index(name) >= k:
                continue
        except KeyError:  # a buffer outside every group (e.g. position ids): include it
            pass
        digest.update(name.encode())
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def split_fingerprint(dataset, collate) -> str | None:
    """A split's identity for the cache, or None when its items are random (augmentation) or unknown."""
    own = getattr(dataset, "fingerprint", None)
    if own is None:
        return None
    part = own()
    collate_part = getattr(collate, "fingerprint", None)
    if part is None or collate_part is None:
        return None
    return hashlib.sha256(f"{part}|{collate_part()}".encode()).hexdigest()


def entry_key(model_digest: str, k: int, fingerprint: str, mode: str) -> str:
    return hashlib.sha256(f"{ENTRY_FORMAT}|{model_digest}|{k}|{fingerprint}|{mode}".encode()).hexdigest()


class CacheTooLarge(Exception):
    """An entry would exceed the memory the cache may hold (estimated from its first batch)."""


class _Indexed(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        return index, self.base[index]


class _CollateKeepingIndex:
    """[(index, item | None)] -> (indices of the kept items, collate(kept items)). A class so workers can pickle it."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, pairs):
        kept = [(i, item) for i, item in pairs if item is not None]
        return [i for i, _ in kept], self.collate([item for _, item in kept])


@torch.no_grad()
def compute_entry(model, dataset, collate, k: int, batch_size: int, device, autocast=nullcontext,
                  prepare_inputs=None, limit_bytes: int | None = None, workers: int = 0) -> dict[str, torch.Tensor]:
    """Run the first k groups (eval mode, no autograd) over a split in dataset order. `prepare_inputs(batch)`
    puts a batch on the device in the run's layout; with `limit_bytes`, CacheTooLarge as soon as the first
    batch shows that the entry would be larger."""
    was_training = model.training
    model.eval()
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_CollateKeepingIndex(collate), generator=torch.Generator().manual_seed(0))
    indices, labels, parts = [], [], []
    try:
        for kept, batch in loader:
            if not kept:
                continue
            batch = prepare_inputs(batch) if prepare_inputs is not None else to_device(batch, device)
            with autocast():
                out = model.features(batch) if k == model.num_backbone_groups else model.forward_until(batch, k - 1)
            indices += kept
            labels.append(batch["labels"].cpu())
            parts.append(_to_cpu(out))
            if limit_bytes is not None and len(parts) == 1:
                per_example = entry_bytes(parts[0] if isinstance(parts[0], dict) else {"h": parts[0]}) / len(kept)
                estimate = per_example * len(dataset)
                if estimate > limit_bytes:
                    raise CacheTooLarge(f"about {estimate / 2**20:.0f} MiB for {len(dataset)} examples, above the "
                                        f"limit of {limit_bytes / 2**20:.0f} MiB")
    finally:
        model.train(was_training)
    entry = {"index": torch.tensor(indices, dtype=torch.long),
             "labels": torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)}
    if not parts:
        return entry
    if k == model.num_backbone_groups:
        entry["features"] = torch.cat(parts)
    elif isinstance(parts[0], dict):  # text: pad every batch to the split's longest text, on the tokenizer's side
        length = max(p["hidden"].shape[1] for p in parts)
        left = _padded_left([p["attention_mask"] for p in parts])
        entry["hidden"] = torch.cat([_pad(p["hidden"], length, left) for p in parts])
        entry["attention_mask"] = torch.cat([_pad(p["attention_mask"], length, left) for p in parts])
    else:
        entry["h"] = torch.cat(parts)
    return entry


def _to_cpu(out):
    if isinstance(out, dict):
        return {key: value.detach().cpu() for key, value in out.items()}
    return out.detach().cpu().contiguous()


def _padded_left(masks: list[torch.Tensor]) -> bool:
    """Whether the tokenizer padded these (B, T) 0/1 masks on the left: some row starts with padding and ends
    with a token (a right-padded row ends with padding; a batch of equal lengths shows no side)."""
    return any(bool(((m[:, 0] == 0) & (m[:, -1] != 0)).any()) for m in masks if m.numel())


def _pad(t: torch.Tensor, length: int, left: bool = False) -> torch.Tensor:
    """(B, T, ...) -> (B, length, ...) with zeros after T (before it with `left`)."""
    if t.shape[1] == length:
        return t
    pad = t.new_zeros((t.shape[0], length - t.shape[1], *t.shape[2:]))
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def expected_entry(model, dataset, collate, k: int, fingerprint: str, device=None, autocast=nullcontext,
                   prepare_inputs=None) -> Expected:
    """What an entry of `dataset` for k frozen groups must be (`Expected`), from the model and the data alone;
    its `fresh_rows` computes rows as `compute_entry` does, in one small batch."""
    whole = k == model.num_backbone_groups
    outputs = ("features",) if whole else ("hidden", "attention_mask") if model.cfg.modality == "text" else ("h",)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) != len(dataset):
        targets = None

    def fresh_rows(rows: list[int]) -> dict[str, torch.Tensor]:
        part = compute_entry(model, Subset(dataset, rows), collate, k, len(rows), device, autocast, prepare_inputs)
        part["index"] = torch.tensor(rows, dtype=torch.long)[part["index"]]  # Subset positions -> dataset rows
        return part

    return Expected(fingerprint=fingerprint, examples=len(dataset), classes=model.num_classes, outputs=outputs,
                    width=model.feature_dim if whole else None, targets=targets, fresh_rows=fresh_rows)


class CachedBatches:
    """Collate for a DataLoader over dataset keys (an index, or the trainer's (index, seed) pairs): the cached
    rows of those examples as a batch the model takes (`TransferModel.forward` reads "features" or "cut_output"
    with "cut_group"). Examples the entry lacks (unreadable files) are dropped, as the uncached collate drops them."""

    def __init__(self, entry: dict[str, torch.Tensor], k: int, size: int):
        self.entry, self.k = entry, k
        self.row = torch.full((size,), -1, dtype=torch.long)
        self.row[entry["index"]] = torch.arange(entry["index"].numel())

    def __call__(self, keys) -> dict:
        indices = torch.tensor([key[0] if isinstance(key, tuple) else key for key in keys], dtype=torch.long)
        rows = self.row[indices]
        rows = rows[rows >= 0]
        entry = self.entry
        batch = {"labels": entry["labels"][rows]}
        if "features" in entry:
            batch["features"] = entry["features"][rows]
        elif "h" in entry:
            batch["cut_output"], batch["cut_group"] = entry["h"][rows], self.k - 1
        else:  # text: trim the padding to this batch's longest text, as the uncached collate pads
            mask = entry["attention_mask"][rows]  # (B, T), padded on the tokenizer's side
            span = _token_span(mask)
            batch["cut_output"] = {"hidden": entry["hidden"][rows, span], "attention_mask": mask[:, span]}
            batch["cut_group"] = self.k - 1
        return batch


def _token_span(mask: torch.Tensor) -> slice:
    """The columns of a (B, T) 0/1 mask from the first to the last that holds a real token of some row: every
    real token, whichever side the rows were padded on (a cut to the first max(mask.sum(1)) columns would drop
    the tokens of left-padded rows)."""
    columns = mask.any(0).nonzero().flatten()
    return slice(int(columns[0]), int(columns[-1]) + 1) if columns.numel() else slice(0, 0)


class _Keys(Dataset):
    """Returns the key it is given: the batch sampler's keys go straight to `CachedBatches`."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, key):
        return key


def cached_loader(entry: dict, k: int, size: int, batch_sampler=None, batch_size: int = 64,
                  generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader over cached rows: with `batch_sampler` the training order (same sampler and generator as
    the uncached loader, so the same batches), else dataset order."""
    collate = CachedBatches(entry, k, size)
    if batch_sampler is not None:
        return DataLoader(_Keys(size), batch_sampler=batch_sampler, generator=generator, collate_fn=collate)
    return DataLoader(_Keys(size), batch_size=batch_size, shuffle=False, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0))


# ---- one run's cache (training/trainer.py) ----------------------------------------------------------------
class CacheSession:
    """The frozen-prefix cache of one run: whether an epoch trains from cached outputs of its k frozen leading
    groups (`groups`), each split's entry for k groups, found in the store or computed on a miss (`entry`), and
    an evaluation loader over it (`eval_loader`; training batches go through `cached_loader` with the trainer's
    sampler). Why the cache is off, it logs once per run. A grid passes one store to all of its cells."""

    def __init__(self, model, strategy, data, config, store: FeatureStore | None, *, distributed: bool, device,
                 precision, channels_last: bool, prepare: Callable[[dict], dict], charge: Callable[[float], None]):
        self.model, self.strategy, self.data, self.config = model, strategy, data, config
        if config.cache and store is None:
            store = FeatureStore(config.cache_memory_mb * 2**20, folder=config.cache_dir or None)
        self.store = store
        self.distributed, self.device, self.precision, self.prepare = distributed, device, precision, prepare
        self.mode = f"{model.cfg.name}|{precision.name}|{'nhwc' if channels_last else 'nchw'}"
        self.charge = charge  # seconds spent computing an entry, counted in the run's state (cache_seconds)
        self._fingerprints: dict[str, str | None] = {}
        self._notes: set[str] = set()

    def note(self, message: str) -> None:
        if message not in self._notes:  # once per run
            self._notes.add(message)
            logger.info(message)

    def groups(self, trainable: set[str] | None) -> int:
        """k >= 1 when this epoch can train from cached outputs of its k frozen leading groups, else 0."""
        if not self.config.cache:
            return 0
        k = frozen_prefix(self.model, trainable)
        if k == 0:
            return 0
        if self.strategy.reads_inputs:
            self.note(f"frozen-prefix cache off: {self.strategy.spec()} reads the inputs of each batch")
            return 0
        if self.distributed:
            self.note("frozen-prefix cache off: in a distributed run every rank would compute the whole split")
            return 0
        return k

    def final_groups(self, history: list[dict], best_epoch: int) -> int:
        """k for the selected weights: they were trained with the best epoch's frozen prefix, so its cached
        outputs still apply (the entry's key is recomputed from these weights: a changed prefix is never served)."""
        best = next((r for r in history if r["epoch"] == best_epoch), {})
        return best.get("cached_groups", 0) if self.config.cache else 0

    def entry(self, split: str, k: int) -> dict | None:
        """The frozen-prefix entry of a split for k groups, computed on a miss; None where none applies."""
        fingerprint = self._fingerprint(split)
        if fingerprint is None:
            self.note(f"frozen-prefix cache off for the {split} split: its items are not a fixed function of the "
                      f"example (augmentation, or a data set without a fingerprint)")
            return None
        key = entry_key(prefix_digest(self.model, k), k, fingerprint, self.mode)
        dataset = getattr(self.data, split)
        # What the entry must be, from the model and the split: a file in --cache-dir is checked against it.
        expect = expected_entry(self.model, dataset, self.data.collate, k, fingerprint, self.device,
                                self.precision.autocast, self.prepare)
        entry = self.store.get(key, expect)
        if entry is None:
            entry = self._compute(split, dataset, k, key, expect)
        return entry

    def eval_loader(self, split: str, k: int) -> DataLoader | None:
        """The split's cached rows in dataset order, in evaluation batches; None without an entry for k groups."""
        entry = self.entry(split, k) if k else None
        if entry is None:
            return None
        return cached_loader(entry, k, len(getattr(self.data, split)), batch_size=self.config.eval_batch_size)

    def _fingerprint(self, split: str) -> str | None:
        if split not in self._fingerprints:
            self._fingerprints[split] = split_fingerprint(getattr(self.data, split), self.data.collate)
        return self._fingerprints[split]

    def _compute(self, split: str, dataset, k: int, key: str, expect: Expected) -> dict | None:
        start = time.perf_counter()
        try:
            entry = compute_entry(self.model, dataset, self.data.collate, k, self.config.eval_batch_size,
                                  self.device, self.precision.autocast, self.prepare,
                                  limit_bytes=None if self.store.folder else self.store.memory_bytes,
                                  workers=self.config.workers)
        except NotImplementedError as exc:  # no cut points for this model: train it uncached
            self.note(f"frozen-prefix cache off: {exc}")
            return None
        except CacheTooLarge as exc:
            self.note(f"frozen-prefix cache off for the {split} split: {exc} (raise --cache-memory-mb)")
            return None
        seconds = time.perf_counter() - start
        self.store.put(key, entry, expect)
        self.charge(seconds)
        logger.info("frozen-prefix cache: %s split through %s in %.1f s (%d examples)", split,
                    "the whole backbone" if k == self.model.num_backbone_groups else f"depth groups 0..{k - 1}",
                    seconds, entry["index"].numel())
        return entry
