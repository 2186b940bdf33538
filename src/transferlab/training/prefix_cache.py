"""The frozen-prefix cache: what a model's frozen first depth groups compute, computed once.

When the first k depth groups stay frozen for an epoch (`linear_probe`, `freeze:k`, `lp_ft`'s probe phase,
`gradual_unfreeze`'s early phases) and the inputs are not augmented, their output is a fixed function of each
example: the trainer runs frozen groups in eval mode (no dropout, stored BatchNorm statistics), so
h = forward_until(x, k - 1) does not change from epoch to epoch. It is computed once per split in inference
mode, and the epoch trains `forward_from(h, k - 1)`; with the whole backbone frozen the pooled features are
stored and only the head runs. A careful user writes this by hand ("features once, then a classifier"); no
maintained library does it inside a general training loop, so it is written here.

An entry's key is its content: the frozen groups' weights and buffers, the cut, the precision and memory
format, and a fingerprint of the split (its files, transforms and tokenizer: `dataset.fingerprint()`). An
entry can therefore not be used for anything it was not computed from, and one `FeatureStore` serves every
run that asks for the same thing: the seeds of a grid, and `lp_ft`'s probe phase after `linear_probe`.

Entries (dict of CPU tensors, rows in dataset order, unreadable examples left out):
    "index"  (N,) long   dataset index of each row        "labels" (N,) long
    "features" (N, D)                                     whole backbone frozen: the head's input
    "h" (N, ...)                                          image models: group k-1's output
    "hidden" (N, T, H), "attention_mask" (N, T)           text models, padded to the split's longest text
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from transferlab.errors import UnsafeFileError
from transferlab.nn_utils import to_device

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 2 * 2**30
ENTRY_FORMAT = "transferlab-prefix-cache-1"


class FeatureStore:
    """Cache entries by key: in memory up to `memory_bytes` (least recently used dropped first) and, when
    `folder` is given, also written there as safetensors files (`<key>.safetensors`), so that an entry too
    large for memory, a resumed grid and parallel grid processes still find it."""

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY_BYTES, folder: str | Path | None = None):
        self.memory_bytes = memory_bytes
        self.folder = Path(folder) if folder is not None else None
        self._entries: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path | None:
        return self.folder / f"{key}.safetensors" if self.folder is not None else None

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        path = self._path(key)
        if path is not None and path.is_file():
            from transferlab.safe_io import load_tensors

            try:
                entry = check_entry(load_tensors(path))
            except (ValueError, UnsafeFileError) as exc:  # damaged or not ours: computed again, and rewritten
                logger.warning("%s: not a usable cache entry (%s); computing it again", path, exc)
            else:
                self._keep(key, entry)
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def put(self, key: str, entry: dict[str, torch.Tensor]) -> bool:
        """Store an entry; False when it fits neither in memory nor on disk (no folder)."""
        kept = self._keep(key, entry)
        path = self._path(key)
        if path is not None:
            from transferlab.safe_io import save_tensors

            path.parent.mkdir(parents=True, exist_ok=True)
            save_tensors(path, entry, metadata={"format": ENTRY_FORMAT})
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


def check_entry(entry: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An entry read from disk, or ValueError: the keys an entry has, one row per example in each."""
    outputs = [name for name in ("features", "h", "hidden") if name in entry]
    if "index" not in entry or "labels" not in entry or len(outputs) > 1 or ("hidden" in entry) != (
            "attention_mask" in entry):
        raise ValueError(f"unexpected tensors {sorted(entry)}")
    rows = entry["index"].shape[0]
    if entry["index"].dim() != 1 or any(t.shape[0] != rows for t in entry.values() if t.dim() > 0):
        raise ValueError("tensors with different numbers of rows")
    if rows and outputs == []:
        raise ValueError("rows without outputs")
    return entry


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
    elif isinstance(parts[0], dict):  # text: pad every batch to the split's longest text
        length = max(p["hidden"].shape[1] for p in parts)
        entry["hidden"] = torch.cat([_pad(p["hidden"], length) for p in parts])
        entry["attention_mask"] = torch.cat([_pad(p["attention_mask"], length) for p in parts])
    else:
        entry["h"] = torch.cat(parts)
    return entry


def _to_cpu(out):
    if isinstance(out, dict):
        return {key: value.detach().cpu() for key, value in out.items()}
    return out.detach().cpu().contiguous()


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, ...) -> (B, length, ...) with zeros after T."""
    if t.shape[1] == length:
        return t
    pad = t.new_zeros((t.shape[0], length - t.shape[1], *t.shape[2:]))
    return torch.cat([t, pad], dim=1)


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
            mask = entry["attention_mask"][rows]
            length = int(mask.sum(1).max()) if rows.numel() else 0
            batch["cut_output"] = {"hidden": entry["hidden"][rows, :length], "attention_mask": mask[:, :length]}
            batch["cut_group"] = self.k - 1
        return batch


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
