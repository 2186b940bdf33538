"""Image features on disk: shards of .npy files, memory-mapped when read, written so that a killed run resumes.

    store = FeatureStore.extract(root, paths, ids, embedder, shard_size=4096)   # resumes from the last shard
    for shard in store.shards():          # one shard's arrays mapped at a time
        shard.embedding                   # (n, D) float32 np.memmap, rows L2-normalised
    grey = store.gather("grey", rows)     # (len(rows), 32, 32) float16, read shard by shard
    feats = store.features()              # an in-memory `ImageFeatures` (small data: the check's usual path)

Layout of `root` (no pickle anywhere: `np.load(..., allow_pickle=False)` and JSON):

    manifest.json          format, the inputs' fingerprint (ids, paths, embedder), shard_size, the complete shards
    shard_00000/           input rows [0, shard_size): rows.npy (int64, the input rows kept; unreadable files are
                           left out and listed in skipped.json), keys.npy (S64: the pixel sha256), grey.npy
                           (n, 32, 32) float16, phash.npy / dhash.npy (n,) uint64, embedding.npy (n, D) float32
    shard_00001/ ...

A shard is written to `shard_XXXXX.tmp/`, renamed when complete, and only then added to the manifest (written
atomically): a run killed at any moment leaves the manifest naming complete shards only, and the next run with
the same inputs continues after the last of them (a renamed shard that the manifest does not name yet is
rewritten). Memory while extracting: one shard's features; while reading: `shards()` maps one shard at a time
(pages of a mapped file are the operating system's cache, given back when the map is closed), and `gather`
reads the rows asked for, shard by shard.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferlab.contamination.image_features import Embedder, ImageFeatures, features_from_arrays, image_features
from transferlab.data import SkipLog
from transferlab.safe_io import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT = "transferlab-image-features/1"
MANIFEST = "manifest.json"
ARRAYS = ("rows", "keys", "grey", "phash", "dhash", "embedding")


def inputs_fingerprint(ids: Sequence[str], paths: Sequence[str], embedder: str) -> str:
    """sha256 of what a store was computed from: the ids and paths, in order, and the embedder's description."""
    h = hashlib.sha256(embedder.encode())
    for i, p in zip(ids, paths):
        h.update(f"\0{i}\0{p}".encode())
    return h.hexdigest()


def describe_embedder(embedder: Embedder | None) -> str:
    if embedder is None:
        return "none"
    return f"{getattr(embedder.model.cfg, 'name', type(embedder.model).__name__)}@{embedder.size}px"


@dataclass
class Shard:
    """One shard's arrays, memory-mapped (read-only)."""

    name: str
    rows: np.ndarray  # (n,) int64: the input rows these features belong to
    keys: np.ndarray  # (n,) S64
    grey: np.ndarray  # (n, 32, 32) float16
    phash: np.ndarray  # (n,) uint64
    dhash: np.ndarray  # (n,) uint64
    embedding: np.ndarray | None  # (n, D) float32


class FeatureStore:
    """A folder of feature shards (module docstring). `open_maps`: shards mapped right now (at most 1 while
    iterating `shards()`), `max_open_maps`: the most at once so far: what the tests check."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{self.root}: no {MANIFEST} (not a feature store)")
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{self.root}: unknown feature store format {self.manifest.get('format')!r}")
        self.open_maps = 0
        self.max_open_maps = 0

    # ---- writing ------------------------------------------------------------------------------------------------
    @classmethod
    def extract(cls, root: str | Path, paths: Sequence[str] | None, ids: Sequence[str],
                embedder: Embedder | None = None, shard_size: int = 4096, batch: int = 256,
                arrays: Sequence[np.ndarray] | None = None,
                on_shard: Callable[[int], None] | None = None) -> FeatureStore:
        """Compute the features of image files (`paths`) or in-memory images (`arrays`, H x W x 3 uint8) into
        `root`, shard by shard, continuing after the last complete shard of an earlier run on the same inputs.
        `on_shard(i)` is called after shard i is recorded (progress; the tests kill the process there)."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        ids = list(ids)
        paths = list(paths) if paths is not None else [""] * len(ids)
        if arrays is None and len(paths) != len(ids) or arrays is not None and len(arrays) != len(ids):
            raise ValueError("one id per input image")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        fingerprint = inputs_fingerprint(ids, paths, describe_embedder(embedder))
        manifest_path = root / MANIFEST
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("inputs") != fingerprint or manifest.get("shard_size") != shard_size:
                raise ValueError(f"{root} holds features of other inputs (or another shard size): give a new folder")
        else:
            manifest = {"format": FORMAT, "inputs": fingerprint, "embedder": describe_embedder(embedder),
                        "n_inputs": len(ids), "shard_size": shard_size, "shards": []}
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
        n_shards = -(-len(ids) // shard_size)
        done = len(manifest["shards"])
        if done:
            logger.info("%s: %d of %d shards already complete, continuing", root, done, n_shards)
        for i in range(done, n_shards):
            a, b = i * shard_size, min((i + 1) * shard_size, len(ids))
            skipped = SkipLog()
            if arrays is not None:
                feats = features_from_arrays(arrays[a:b], [str(r) for r in range(a, b)], embedder, batch)
            else:
                feats = image_features(paths[a:b], [str(r) for r in range(a, b)], embedder, batch, skipped)
            name = f"shard_{i:05d}"
            tmp, final = root / f"{name}.tmp", root / name
            for stale in (tmp, final):  # a shard written but not recorded when the last run was killed
                if stale.exists():
                    shutil.rmtree(stale)
            tmp.mkdir()
            rows = np.array([int(r) for r in feats.ids], dtype=np.int64)
            out = {"rows": rows, "keys": np.array(feats.keys, dtype="S64"),
                   "grey": feats.grey.numpy().astype(np.float16), "phash": feats.phash, "dhash": feats.dhash}
            if feats.embedding is not None:
                out["embedding"] = feats.embedding.numpy().astype(np.float32)
            for key, arr in out.items():
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            (tmp / "skipped.json").write_text(json.dumps(skipped.to_list()), encoding="utf-8")
            os.replace(tmp, final)
            manifest["shards"].append({"name": name, "start": a, "stop": b, "n": len(rows)})
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
            if on_shard is not None:
                on_shard(i)
        return cls(root)

    # ---- reading ------------------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.manifest["shards"]) and self.manifest["shards"][-1]["stop"] == self.manifest["n_inputs"] \
            or self.manifest["n_inputs"] == 0

    def __len__(self) -> int:
        return sum(s["n"] for s in self.manifest["shards"])

    def _open(self, entry: dict) -> Shard:
        folder = self.root / entry["name"]
        maps = {key: np.load(folder / f"{key}.npy", mmap_mode="r", allow_pickle=False)
                for key in ARRAYS if (folder / f"{key}.npy").is_file()}
        return Shard(entry["name"], maps["rows"], maps["keys"], maps["grey"], maps["phash"], maps["dhash"],
                     maps.get("embedding"))

    def shards(self) -> Iterator[Shard]:
        """Each shard mapped in turn; the previous one's maps are closed before the next is opened (the caller
        must not keep a shard's arrays past the next step)."""
        for entry in self.manifest["shards"]:
            shard = self._open(entry)
            self.open_maps += 1
            self.max_open_maps = max(self.max_open_maps, self.open_maps)
            try:
                yield shard
            finally:
                for key in ARRAYS:
                    arr = getattr(shard, key, None)
                    mm = getattr(arr, "_mmap", None)
                    if mm is not None:
                        try:
                            mm.close()
                        except BufferError:  # a view of it is still in use: its pages go when that does
                            pass
                del shard
                self.open_maps -= 1

    def gather(self, what: str, rows: np.ndarray) -> np.ndarray:
        """Store rows (0..len - 1, in store order) of one array, read shard by shard: e.g. the grey images of an
        index's candidates, to re-verify them exactly."""
        rows = np.asarray(rows, dtype=np.int64)
        out = None
        start = 0
        for shard in self.shards():
            arr = getattr(shard, what)
            n = len(shard.rows)
            mine = (rows >= start) & (rows < start + n)
            if out is None:
                out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
            if mine.any():
                out[mine] = arr[rows[mine] - start]
            start += n
        return out if out is not None else np.empty((0,))

    def features(self, ids: Sequence[str] | None = None, paths: Sequence[str] | None = None) -> ImageFeatures:
        """All shards as one in-memory `ImageFeatures` (ids and paths: the inputs', by row; default: the row
        numbers). For data that fits in memory; at scale, read `shards()` and `gather`."""
        rows, keys, grey, ph, dh, emb = [], [], [], [], [], []
        for s in self.shards():
            rows.append(np.array(s.rows))
            keys += [k.decode() for k in s.keys]
            grey.append(torch.from_numpy(np.array(s.grey)))
            ph.append(np.array(s.phash))
            dh.append(np.array(s.dhash))
            if s.embedding is not None:
                emb.append(torch.from_numpy(np.array(s.embedding)))
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        name = (lambda r: ids[r]) if ids is not None else str
        return ImageFeatures([name(int(r)) for r in rows], [paths[int(r)] if paths else "" for r in rows], keys,
                             torch.cat(grey) if grey else torch.zeros(0, 32, 32, dtype=torch.float16),
                             np.concatenate(ph) if ph else np.zeros(0, np.uint64),
                             np.concatenate(dh) if dh else np.zeros(0, np.uint64),
                             torch.cat(emb) if emb else None)


__all__ = ["FORMAT", "FeatureStore", "Shard", "inputs_fingerprint"]
