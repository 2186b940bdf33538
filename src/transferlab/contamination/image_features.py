"""What the image methods compare, computed in one pass over the files: bounded memory, whatever the size.

    feats = image_features(paths, ids, embedder=Embedder(model, size=64))
    feats.keys (N,) pixel hashes, feats.grey (N, 32, 32) float16, feats.phash / feats.dhash (N,) uint64,
    feats.embedding (N, D) float32 L2-normalised (None without an embedder)

Each image is decoded once, `batch` at a time; only the per-image features stay in memory (about 2 KB grey +
16 bytes of hashes + 4 D bytes of embedding, 7 KB with EfficientNet-Lite0's 1,280 features: 420 MB for
CIFAR-10's 60,000 images). Unreadable files are skipped and counted in a `SkipLog`, as everywhere.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from transferlab.contamination.image_matching import (
    dhash_batch,
    phash_batch,
    pixel_hash,
    to_grey32,
)
from transferlab.data import SkipLog
from transferlab.data._images import read_image, unreadable_reason

logger = logging.getLogger(__name__)
KEEP_SIDE = 256  # pixels: decoded images are kept at most this large (the hashes read 32 px, the embedding 64)


class Embedder:
    """A model's pooled backbone features of H x W x 3 uint8 images, resized to `size` x `size` and normalised
    with the model's mean and std: list of images -> (B, D) float32."""

    def __init__(self, model, size: int = 64, device: str = "cpu"):
        if not 16 <= size <= 1024:
            raise ValueError(f"embedding size must be in 16..1024 pixels, got {size}")
        self.model = model.eval().to(device)
        self.size = size
        self.device = device
        cfg = model.cfg
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """One image at the embedding's size, uint8 (kept small between decoding and the batch's forward)."""
        if rgb.shape[:2] == (self.size, self.size):
            return rgb
        return np.asarray(Image.fromarray(rgb).resize((self.size, self.size), Image.Resampling.BILINEAR))

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([self.prepare(np.asarray(im)) for im in images])).permute(0, 3, 1, 2)
        x = ((x.float() / 255.0 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.model.features({"pixel_values": x.to(self.device)}).float().cpu()


@dataclass
class ImageFeatures:
    """Per-image features of one data set (rows in `ids` order)."""

    ids: list[str]
    paths: list[str]
    keys: list[str]
    grey: torch.Tensor  # (N, 32, 32) float16, luma 0..255
    phash: np.ndarray  # (N,) uint64
    dhash: np.ndarray  # (N,) uint64
    embedding: torch.Tensor | None  # (N, D) float32, rows L2-normalised
    skipped: SkipLog = field(default_factory=SkipLog)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: Sequence[int] | np.ndarray) -> ImageFeatures:
        rows = np.asarray(rows, dtype=np.int64)
        pick = torch.from_numpy(rows)
        return ImageFeatures([self.ids[i] for i in rows], [self.paths[i] for i in rows],
                             [self.keys[i] for i in rows], self.grey[pick], self.phash[rows], self.dhash[rows],
                             None if self.embedding is None else self.embedding[pick], self.skipped)


def _features_of(arrays: list[np.ndarray], embedder: Embedder | None):
    grey = np.stack([to_grey32(a) for a in arrays])
    emb = None
    if embedder is not None:
        emb = F.normalize(embedder(arrays), dim=1, eps=1e-12)
    return grey, phash_batch(grey), dhash_batch(grey), emb


def features_from_arrays(arrays: Sequence[np.ndarray], ids: Sequence[str], embedder: Embedder | None = None,
                         batch: int = 256) -> ImageFeatures:
    """Features of images already in memory (H x W x 3 uint8), e.g. the tool's own near-copies."""
    it = ((i, np.asarray(a)) for i, a in enumerate(arrays))
    return _collect(it, list(ids), [""] * len(ids), embedder, batch, SkipLog(), None)


def image_features(paths: Sequence[str], ids: Sequence[str], embedder: Embedder | None = None, batch: int = 256,
                   skipped: SkipLog | None = None, progress: Callable[[int, int], None] | None = None,
                   max_side: int = 512) -> ImageFeatures:
    """Features of image files (ids: how the outputs name them). A file that cannot be decoded is recorded in
    `skipped` and left out. JPEGs larger than `max_side` decode at a reduced scale (PIL's draft mode): every
    method works at 32 px or the embedding's size, so full resolution only costs time."""
    skipped = skipped if skipped is not None else SkipLog()
    paths, ids = list(paths), list(ids)

    def decoded():
        for i, path in enumerate(paths):
            try:
                yield i, np.asarray(read_image(path, min_side=max_side))
            except Exception as exc:  # noqa: BLE001  (a bad file is skipped and counted, never fatal)
                skipped.add(path, unreadable_reason(exc))

    return _collect(decoded(), ids, paths, embedder, batch, skipped, progress)


def _collect(items, ids, paths, embedder, batch, skipped, progress) -> ImageFeatures:
    kept: list[int] = []
    keys: list[str] = []
    grey, ph, dh, emb = [], [], [], []
    buf: list[np.ndarray] = []
    t0, last = time.perf_counter(), time.perf_counter()
    keep_side = max(KEEP_SIDE, embedder.size if embedder is not None else 0)  # never upsample for the embedding

    def flush():
        g, p, d, e = _features_of(buf, embedder)
        grey.append(torch.from_numpy(g).to(torch.float16))
        ph.append(p)
        dh.append(d)
        if e is not None:
            emb.append(e)
        buf.clear()

    for i, arr in items:
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"{ids[i]}: expected an H x W x 3 uint8 image, got {arr.dtype} {arr.shape}")
        kept.append(i)
        keys.append(pixel_hash(arr))  # of the pixels as decoded, before any resizing
        # big photos: keep a copy no larger than the methods read until the batch is processed
        buf.append(arr if max(arr.shape[:2]) <= keep_side else _shrink(arr, keep_side))
        if len(buf) == batch:
            flush()
            if progress is not None and time.perf_counter() - last > 10:
                progress(len(kept), len(ids))
                last = time.perf_counter()
    if buf:
        flush()
    logger.debug("features of %d images in %.1fs", len(kept), time.perf_counter() - t0)
    empty = torch.zeros(0, 32, 32, dtype=torch.float16)
    return ImageFeatures(
        ids=[ids[i] for i in kept], paths=[paths[i] for i in kept], keys=keys,
        grey=torch.cat(grey) if grey else empty,
        phash=np.concatenate(ph) if ph else np.zeros(0, np.uint64),
        dhash=np.concatenate(dh) if dh else np.zeros(0, np.uint64),
        embedding=torch.cat(emb) if emb else None, skipped=skipped)


def _shrink(arr: np.ndarray, side: int) -> np.ndarray:
    img = Image.fromarray(arr)
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(img)
