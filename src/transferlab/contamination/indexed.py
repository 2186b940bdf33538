"""The image search through the on-disk feature store and faiss indexes (`transferlab contamination --index faiss`).

    store = FeatureStore.extract(root, paths, ids, embedder)       # shard by shard, resumable (feature_store.py)
    index = StoreIndex(store, kind="ivf")                          # indexes built from the shards, one at a time
    found = index.match(target_feats, methods, k=10)               # as detect.match_images: method -> MethodResult
    null = index.null_scores(methods, k, n_null)                   # as calibrate.null_scores
    report = index.calibrate(read_rgb, embedder, methods, thresholds, n_copied=200)   # as detect.calibrate_images

What is held in memory, per source image: the indexes' vectors (the embedding, D floats; the 8 x 8 thumbnail, 64
floats; its nine crop views, 9 x 64 floats; float32, plus the index's own lists or graph) and 32 bytes (the two
hashes, a group id for the pixel key, the input row). The grey images (2 KB each), the pixel keys and the
embeddings on disk are read shard by shard: memory is bounded by the indexes whatever the source size.

The indexes only propose candidates; every decision is the exact search's:
- exact: the pixel keys compared exactly, streamed over the shards;
- phash, dhash: exact Hamming nearest on the hashes (`detect.hamming_rows`);
- embedding: the index's best row, re-scored by its exact cosine on the stored vectors;
- aligned: the same candidates as `detect.aligned_candidates` (top k by thumbnail and by embedding, the hashes'
  nearest, the crop views' top few, the mirrored target's), each retrieved from an index, and every candidate
  re-verified by the same correlation (`detect.best_aligned`) on its grey image gathered from the store, targets
  `chunk` at a time (so the gathered images are bounded by the chunk, not the source).
With the "flat" index the candidates are the exact search's (up to the order of equal scores); "ivf" and "hnsw"
can miss a candidate, never make a match. Thresholds come from the same null and copies, searched the same way.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.contamination.ann import EmbeddingIndex
from transferlab.contamination.calibrate import DEFAULT_NULL_SIZE, NullScores
from transferlab.contamination.detect import (
    DEFAULT_K,
    N_CROP_VIEWS,
    THRESHOLD_RANGES,
    Candidates,
    MethodResult,
    best_aligned,
    crop_thumbnails,
    crop_view_exclude,
    hamming_rows,
    near_copy_report,
    thumbnails,
)
from transferlab.contamination.feature_store import FeatureStore, Shard
from transferlab.contamination.image_features import Embedder, ImageFeatures
from transferlab.contamination.image_matching import HASH_METHODS

logger = logging.getLogger(__name__)

ANN_KINDS = ("auto", "flat", "ivf", "hnsw")
IVF_FROM = 20_000  # "auto": the exact "flat" index below this many source images, "ivf" from there


def ann_kind(kind: str, n: int) -> str:
    """The faiss index for n source images: `kind`, or for "auto" flat (exact) under IVF_FROM, else ivf."""
    if kind not in ANN_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(ANN_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "flat" if n < IVF_FROM else "ivf"


def _grey(shard: Shard) -> torch.Tensor:
    return torch.from_numpy(np.array(shard.grey))  # (n, 32, 32) float16, copied out of the map


def _key_ids(keys: np.ndarray) -> np.ndarray:
    """The first 16 hex digits of each pixel sha256 as uint64: a group id for equal pixels (collisions ~2^-64)."""
    return np.array([int(k[:16], 16) for k in keys], dtype=np.uint64)


class StoreIndex:
    """A feature store's source images behind faiss indexes (module docstring). `kind`: "flat", "ivf" or "hnsw"
    (`ann.EmbeddingIndex`); `crops`: also index the crop views (the aligned method's crop retrieval)."""

    def __init__(self, store: FeatureStore, kind: str = "flat", crops: bool = True, seed: int = 0):
        t0 = time.perf_counter()
        self.store, self.kind = store, kind
        rows, ph, dh, keys = [], [], [], []
        has_embedding = False
        for sh in store.shards():
            rows.append(np.array(sh.rows))
            ph.append(np.array(sh.phash))
            dh.append(np.array(sh.dhash))
            keys.append(_key_ids(sh.keys))
            has_embedding |= sh.embedding is not None and len(sh.rows) > 0
        self.n = int(sum(len(r) for r in rows))
        self.input_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)  # store row -> input row
        self.phash = np.concatenate(ph) if ph else np.zeros(0, np.uint64)
        self.dhash = np.concatenate(dh) if dh else np.zeros(0, np.uint64)
        _, self.group = np.unique(np.concatenate(keys) if keys else np.zeros(0, np.uint64), return_inverse=True)
        self.group_sizes = np.bincount(self.group) if self.n else np.zeros(0, np.int64)
        self.thumb = self.crop = self.emb = None
        if not self.n:
            return

        def chunks(fn: Callable[[Shard], np.ndarray]):
            return lambda: (fn(sh) for sh in store.shards() if len(sh.rows))

        self.thumb = EmbeddingIndex(kind, seed=seed).build(chunks(lambda sh: thumbnails(_grey(sh)).numpy()), self.n)
        if crops:
            self.crop = EmbeddingIndex(kind, seed=seed).build(chunks(lambda sh: crop_thumbnails(_grey(sh)).numpy()),
                                                              5 * self.n)
        if has_embedding:
            self.emb = EmbeddingIndex(kind, seed=seed).build(chunks(lambda sh: np.asarray(sh.embedding)), self.n)
        logger.info("faiss %s indexes of %d source images built in %.1fs", kind, self.n, time.perf_counter() - t0)

    def __len__(self) -> int:
        return self.n

    # ---- reading the store --------------------------------------------------------------------------------
    def features(self, rows: Sequence[int] | np.ndarray) -> ImageFeatures:
        """The stored features of some source rows (null queries, held-out negatives), ids the row numbers."""
        rows = np.asarray(rows, dtype=np.int64)
        emb = None
        if self.emb is not None:
            emb = torch.from_numpy(np.ascontiguousarray(self.store.gather("embedding", rows), dtype=np.float32))
        grey = self.store.gather("grey", rows) if len(rows) else np.zeros((0, 32, 32), np.float16)
        keys = [k.decode() for k in self.store.gather("keys", rows)] if len(rows) else []
        return ImageFeatures([str(r) for r in rows], [""] * len(rows), keys, torch.from_numpy(grey),
                             self.phash[rows], self.dhash[rows], emb)

    def keys(self) -> list[str]:
        """Every source pixel key (for the "same content" check, only asked when there are as many targets)."""
        return [k.decode() for sh in self.store.shards() for k in np.array(sh.keys)]

    # ---- searches -----------------------------------------------------------------------------------------
    @staticmethod
    def _held(held: np.ndarray | None, rep: int) -> np.ndarray | None:
        """Index rows of held-out source rows (rep index rows per source row), for the ID selector."""
        if held is None or not len(held):
            return None
        return (np.asarray(held, np.int64)[:, None] * rep + np.arange(rep)).ravel()

    def _rows(self, index: EmbeddingIndex, query: np.ndarray, k: int, rep: int = 1, exclude=None,
              held: np.ndarray | None = None) -> np.ndarray:
        """`detect.nearest_rows` on a faiss index: (N, k) source rows (index row r is source row r // rep), -1
        where the index found none; `exclude` (q_group, group, twins): leave out the query's own group."""
        sel = self._held(held, rep)
        if exclude is None:
            _, idx = index.search(query, min(k, index.n), sel)
            return np.where(idx >= 0, idx // rep, -1)
        q_group, group, twins = exclude
        _, idx = index.search(query, min(k + twins * rep, index.n), sel)
        valid = idx >= 0
        idx = np.where(valid, idx // rep, -1)
        other = valid & (group[np.maximum(idx, 0)] != q_group[:, None])
        order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # the others first, in their rank order
        idx, other = np.take_along_axis(idx, order, 1), np.take_along_axis(other, order, 1)
        return np.where(other, idx, idx[:, :1])

    def _hash_rows(self, name: str, q_hashes: np.ndarray, exclude=None,
                   held: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        source = getattr(self, name)
        if held is not None and len(held):
            keep = np.setdiff1d(np.arange(self.n), held)  # sorted: ties still go to the lowest row
            idx, dist = hamming_rows(q_hashes, source[keep])
            return keep[idx], dist
        return hamming_rows(q_hashes, source, exclude)

    def _exact(self, keys: Sequence[str], held: np.ndarray | None = None) -> np.ndarray:
        """The lowest source row with each target's pixel key, or -1; streamed over the shards."""
        want = np.array([k.encode() for k in keys], dtype="S64")
        first: dict[bytes, int] = {}
        start = 0
        for sh in self.store.shards():
            sk = np.array(sh.keys)
            for j in np.flatnonzero(np.isin(sk, want)):
                if held is None or not np.isin(start + j, held):
                    first.setdefault(bytes(sk[j]), start + int(j))
            start += len(sk)
        return np.array([first.get(k, -1) for k in want.tolist()], dtype=np.int64)

    def _cosines(self, q_emb: torch.Tensor, rows: np.ndarray) -> np.ndarray:
        """The exact cosine of each query with its row (-1 where there is none)."""
        out = np.full(len(rows), -1.0)
        has = np.flatnonzero(rows >= 0)
        if len(has):
            src = torch.from_numpy(np.ascontiguousarray(self.store.gather("embedding", rows[has]), dtype=np.float32))
            q = F.normalize(q_emb[torch.from_numpy(has)].float(), dim=1, eps=1e-12)
            out[has] = (q * F.normalize(src, dim=1, eps=1e-12)).sum(1).double().numpy()
        return out

    def candidates(self, q_grey: torch.Tensor, q_emb: torch.Tensor | None, k: int = DEFAULT_K, flip: bool = True,
                   crops: bool = True, exclude=None, held: np.ndarray | None = None,
                   hashes: dict[str, np.ndarray] | None = None) -> Candidates:
        """`detect.aligned_candidates`, each list retrieved from an index (module docstring)."""
        q_thumb = thumbnails(q_grey).numpy()
        plain = [self._rows(self.thumb, q_thumb, k, 1, exclude, held)]
        emb = None
        if q_emb is not None and self.emb is not None:
            emb = self._rows(self.emb, q_emb.numpy(), k, 1, exclude, held)
            plain.append(emb)
        for name in ("phash", "dhash"):
            if hashes is not None and name in hashes:
                plain.append(np.asarray(hashes[name]).reshape(-1, 1))
            else:
                plain.append(self._hash_rows(name, HASH_METHODS[name](q_grey.float().numpy()), exclude,
                                             held)[0][:, None])
        if crops and self.crop is not None:
            kc = max(2, k // 4)
            plain.append(self._rows(self.crop, q_thumb, kc, N_CROP_VIEWS, exclude, held))
            views = self._rows(self.thumb, crop_thumbnails(q_grey).numpy(), kc, 1, crop_view_exclude(exclude), held)
            plain.append(views.reshape(len(q_grey), -1))
        flipped = None
        if flip:
            mirror = q_grey.flip(-1)
            flipped = [self._rows(self.thumb, thumbnails(mirror).numpy(), k, 1, exclude, held)]
            m_np = mirror.float().numpy()
            flipped += [self._hash_rows(n, HASH_METHODS[n](m_np), exclude, held)[0][:, None] for n in ("phash", "dhash")]
            if emb is not None:
                flipped.append(emb)
            flipped = np.concatenate(flipped, axis=1)
        plain = np.concatenate(plain, axis=1)
        # where an approximate index found fewer than asked (-1), repeat a row found (the hashes' always is)
        fill = plain.max(axis=1, keepdims=True)
        plain = np.where(plain >= 0, plain, fill)
        if flipped is not None:
            flipped = np.where(flipped >= 0, flipped, fill)
        return Candidates(plain, flipped)

    def _aligned(self, q_grey: torch.Tensor, q_emb: torch.Tensor | None, k: int, flip: bool, crops: bool,
                 hashes: dict[str, np.ndarray], exclude=None, held: np.ndarray | None = None,
                 chunk: int = 1024) -> MethodResult:
        """Best aligned correlation over each query's candidates, the candidates' grey images gathered from the
        store `chunk` queries at a time."""
        n_q = len(q_grey)
        source, score = np.zeros(n_q, np.int64), np.zeros(n_q)
        for a in range(0, n_q, chunk):
            sl = slice(a, a + chunk)
            ex = None if exclude is None else (exclude[0][sl], exclude[1], exclude[2])
            cand = self.candidates(q_grey[sl], None if q_emb is None else q_emb[sl], k, flip, crops, ex, held,
                                   {n: np.asarray(h)[sl] for n, h in hashes.items()})
            parts = [cand.plain.ravel()] + ([cand.flipped.ravel()] if cand.flipped is not None else [])
            uniq = np.unique(np.concatenate(parts))  # sorted: best_aligned's ties (lowest row) carry over
            grey = torch.from_numpy(self.store.gather("grey", uniq))

            def local(c: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.searchsorted(uniq, c).astype(np.int64))

            r = best_aligned(q_grey[sl], grey, local(cand.plain),
                             flip_cand=None if cand.flipped is None else local(cand.flipped))
            source[sl], score[sl] = uniq[r.source], r.score
        return MethodResult("aligned", source, score)

    def match(self, queries: ImageFeatures, methods: Sequence[str], k: int = DEFAULT_K, flip: bool = True,
              crops: bool = True, held: np.ndarray | None = None) -> dict[str, MethodResult]:
        """Each method's best source row for each query (`detect.match_images`); `held`: source rows left out
        (the calibration's negatives)."""
        if not self.n:
            raise ValueError("the source holds no images: nothing to match against")
        if "embedding" in methods and (queries.embedding is None or self.emb is None):
            raise ValueError("the embedding method needs embeddings of both sets (an Embedder)")
        if len(queries) == 0:
            empty = np.zeros(0)
            return {m: MethodResult(m, empty.astype(np.int64), empty) for m in methods}
        k = min(k, self.n - (0 if held is None else len(held)))
        out: dict[str, MethodResult] = {}
        if "exact" in methods:
            idx = self._exact(queries.keys, held)
            out["exact"] = MethodResult("exact", idx, (idx >= 0).astype(np.float64))
        hashes = {}
        for name in ("phash", "dhash"):
            if name in methods or "aligned" in methods:
                idx, dist = self._hash_rows(name, getattr(queries, name), held=held)
                hashes[name] = idx
                if name in methods:
                    out[name] = MethodResult(name, idx, dist.astype(np.float64))
        if "embedding" in methods:
            idx = self._rows(self.emb, queries.embedding.numpy(), 1, 1, None, held)[:, 0]
            out["embedding"] = MethodResult("embedding", idx, self._cosines(queries.embedding, idx))
        if "aligned" in methods:
            out["aligned"] = self._aligned(queries.grey, queries.embedding, k, flip, crops, hashes, held=held)
        return {m: out[m] for m in methods}

    def null_scores(self, methods: Sequence[str], k: int = DEFAULT_K, n_null: int = DEFAULT_NULL_SIZE,
                    seed: int = 0, flip: bool = True, crops: bool = True) -> NullScores:
        """`calibrate.null_scores` through the indexes: the same seeded sample of source rows, each searched
        against the source without itself and its exact twins."""
        methods = [m for m in methods if m in THRESHOLD_RANGES]
        n_source = self.n
        if n_source < 2:
            raise ValueError(f"a null distribution needs at least 2 source images, got {n_source}")
        t0 = time.perf_counter()
        queries = np.random.default_rng(seed).permutation(n_source)[:min(n_null, n_source)]
        sizes = self.group_sizes
        q_group = self.group[queries]
        if (sizes[q_group] == n_source).any():
            raise ValueError("every source image is an exact twin of the others: no distinct images to calibrate on")
        exclude = (q_group, self.group, int(sizes.max()))
        q = self.features(queries)
        scores, nearest = {}, {}
        for name in ("phash", "dhash"):
            if name in methods or "aligned" in methods:
                index, distance = hamming_rows(getattr(q, name), getattr(self, name), exclude)
                nearest[name] = index
                if name in methods:
                    scores[name] = distance.astype(np.float64)
        if "embedding" in methods:
            rows = self._rows(self.emb, q.embedding.numpy(), 1, 1, exclude)[:, 0]
            scores["embedding"] = self._cosines(q.embedding, rows)
        if "aligned" in methods:
            scores["aligned"] = self._aligned(q.grey, q.embedding, min(k, n_source - 1), flip, crops, nearest,
                                              exclude=exclude).score
        seconds = time.perf_counter() - t0
        share = float(np.mean(n_source - sizes[q_group])) / n_source
        logger.info("null of %d source images through the %s indexes: %.1fs", len(queries), self.kind, seconds)
        return NullScores({m: scores[m] for m in methods}, n_source, share, seed, round(seconds, 1))

    def calibrate(self, read_rgb: Callable[[int], np.ndarray], embedder: Embedder | None, methods: Sequence[str],
                  thresholds: dict[str, float] | None = None, n_copied: int = 200, n_negatives: int = 500,
                  k: int = DEFAULT_K, seed: int = 0, flip: bool = True, crops: bool = True) -> dict:
        """`detect.calibrate_images` through the indexes: the held-out rows are left out by the indexes' ID
        selector (and of the hash and key searches); read_rgb(store row) -> the source image."""
        def search(queries: ImageFeatures, held: np.ndarray, keep: np.ndarray) -> dict[str, MethodResult]:
            return self.match(queries, methods, k, flip, crops, held=held)

        return near_copy_report(self.n, read_rgb, embedder, search, self.features, methods, thresholds, n_copied,
                                n_negatives, seed)


__all__ = ["ANN_KINDS", "IVF_FROM", "StoreIndex", "ann_kind"]
