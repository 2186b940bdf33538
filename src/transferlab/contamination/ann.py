"""Approximate nearest neighbours of embeddings with faiss, for sources too many for the exact search.

    index = EmbeddingIndex("ivf").build(store_chunks, n=len(store))   # chunks of (n, D) float32, L2-normalised
    scores, rows = index.search(queries, k=10)                         # (Q, k), best first; -1 where none

An approximate index only proposes candidates: every candidate is re-verified exactly afterwards (the aligned
method's correlation on the candidate's grey image, `FeatureStore.gather`; the embedding's own cosine is the
index's inner product on the stored vectors, exact for "flat" and "ivf"), so approximation can only lose a match
the exact search would have proposed, never make one. What is lost is measured in docs/contamination.md
(benchmarks/contamination_index.py).

Kinds (inner product = cosine on L2-normalised rows):
- "flat": `faiss.IndexFlatIP`, exact (the reference);
- "ivf": `faiss.IndexIVFFlat` with nlist = 4 sqrt(N) lists (clamped to 16..65,536) trained by k-means on at most
  40 x nlist of the vectors (faiss asks for 39 or more a list), searched in `nprobe` lists (default 32): vectors
  stored uncompressed, so memory is N x D x 4 bytes plus the list ids (8 bytes a vector); added chunk by
  chunk from the store;
- "hnsw": `faiss.IndexHNSWFlat` (M = 32, efSearch 128): no training, more memory (the graph: about M x 2 x 4
  bytes a vector) and a slower build.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")


def _faiss():
    import faiss  # faiss-cpu: only the scale path needs it

    return faiss


def default_nlist(n: int) -> int:
    return int(min(65536, max(16, round(4 * math.sqrt(max(n, 1))))))


class EmbeddingIndex:
    """A faiss index of L2-normalised rows (module docstring). `build` adds the vectors chunk by chunk."""

    def __init__(self, kind: str = "ivf", nlist: int | None = None, nprobe: int = 32, hnsw_m: int = 32,
                 ef_search: int = 128, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind, self.nlist, self.nprobe = kind, nlist, nprobe
        self.hnsw_m, self.ef_search, self.seed = hnsw_m, ef_search, seed
        self.index = None
        self.n = 0

    def build(self, chunks: Callable[[], Iterable[np.ndarray]], n: int | None = None,
              train: np.ndarray | None = None) -> EmbeddingIndex:
        """`chunks()`: an iterable of (m, D) float32 arrays (e.g. a store's shards, memory-mapped), read once to
        add (and, for "ivf" without `train`, once more to draw the k-means sample). `n`: how many rows in all."""
        faiss = _faiss()
        first = next(iter(chunks()))
        d = first.shape[1]
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = self.ef_search
        else:
            if n is None:
                n = sum(len(c) for c in chunks())
            nlist = self.nlist or default_nlist(n)
            quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            if train is None:
                train = self._sample(chunks, n, min(n, 40 * nlist))
            self.index.cp.seed = self.seed
            self.index.train(np.ascontiguousarray(train, dtype=np.float32))
            self.index.nprobe = min(self.nprobe, nlist)
        for c in chunks():
            self.index.add(np.ascontiguousarray(c, dtype=np.float32))
        self.n = self.index.ntotal
        return self

    def _sample(self, chunks, n: int, m: int) -> np.ndarray:
        """A seeded sample of m of the n rows, read chunk by chunk (only the sample is held)."""
        pick = np.sort(np.random.default_rng(self.seed).choice(n, m, replace=False))
        out, start = [], 0
        for c in chunks():
            mine = pick[(pick >= start) & (pick < start + len(c))] - start
            if len(mine):
                out.append(np.asarray(c[mine], dtype=np.float32))
            start += len(c)
        return np.concatenate(out)

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k) float32, rows (Q, k) int64), best first; row -1 (score -inf) where fewer than k found.
        `exclude`: rows never returned (the calibration's held-out images), by a faiss ID selector."""
        if self.index is None:
            raise RuntimeError("build the index first")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if exclude is not None and len(exclude):
            faiss = _faiss()
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64)))
            if self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
            elif self.kind == "hnsw":
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
            else:
                params = faiss.SearchParameters(sel=sel)
            scores, rows = self.index.search(queries, k, params=params)
        else:
            scores, rows = self.index.search(queries, k)
        scores[rows < 0] = -np.inf
        return scores, rows.astype(np.int64)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k rows that the approximate top-k holds (each query's sets compared)."""
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / exact.size


__all__ = ["EmbeddingIndex", "KINDS", "default_nlist", "recall_at_k"]
