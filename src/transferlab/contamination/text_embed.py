"""Near-copies of edited texts by sentence-embedding similarity (the text method `embedding`).

    embed = TextEmbedder()                                     # the bundled minilm_l6 (sentence-transformers)
    index = TextEmbeddingIndex(embed).fit(source_texts, source_words)
    null = index.null(n=8)                                     # best cosine of source rows that copy nothing
    choice = jaccard_threshold(null, fpr, floor=0.0, method="embedding")   # the threshold, from the data
    rows, cosine = index.best(target_texts, target_words)      # (T,) best source row (-1: none), its cosine
    index.recall(source_texts, words, choice.threshold)        # recall of 1-, 2-, 3-word edits

- The similarity: the cosine of the mean-pooled token states of `minilm_l6` (all-MiniLM-L6-v2, mean pooling as
  its 1_Pooling/config.json says; texts cut at 128 tokens), L2-normalised. Unlike word sets, a replaced word
  moves the embedding by how much it changes the meaning, and a paraphrase scores high too.
- The nearest source row: `ann.EmbeddingIndex` (the faiss index of the image search; "flat", exact, under 20,000
  rows, "ivf" from there), then the cosine recomputed exactly on the stored vectors.
- Which texts: as `minhash`, targets of at least `min_words` words (8) are scored; shorter ones score -1 (the
  n-gram method's short rule covers them).
- The threshold: the order statistic of the other methods (`text_near.jaccard_threshold`) on a null of up to
  `null_size` distinct source texts, each matched against the rest of the source, leaving out itself, rows with
  the same normalised words, any row that shares an n-gram with it and any row whose whole text occurs inside it
  (`text_near.minhash_null`'s rule: what the n-gram method already calls a copy).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.contamination.ann import EmbeddingIndex
from transferlab.contamination.text_near import DEFAULT_MIN_WORDS, DEFAULT_NULL_SIZE, _ngrams

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "minilm_l6"


class TextEmbedder:
    """A registered text model's pooled features (mean over tokens for minilm_l6), L2-normalised: texts -> (N, D)."""

    def __init__(self, name: str = DEFAULT_TEXT_MODEL, batch: int = 64):
        from transferlab.models import create_model

        self.name, self.batch = name, batch
        self.model = create_model(name, 2).eval()
        if self.model.cfg.modality != "text" or self.model.tokenizer is None:
            raise ValueError(f"{name} is not a text model")
        self.max_length = int(getattr(self.model.cfg, "max_length", 128) or 128)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for a in range(0, len(texts), self.batch):
            enc = self.model.tokenizer(list(texts[a:a + self.batch]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
            out.append(F.normalize(self.model.features(dict(enc)).float(), dim=1, eps=1e-12).numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


class TextEmbeddingIndex:
    """Source texts' embeddings behind a faiss index; best match by exact cosine (module docstring)."""

    def __init__(self, embedder: TextEmbedder, kind: str = "auto", min_words: int = DEFAULT_MIN_WORDS):
        self.embedder, self.kind, self.min_words = embedder, kind, min_words

    def fit(self, texts: Sequence[str], words: Sequence[Sequence[str]]) -> TextEmbeddingIndex:
        from transferlab.contamination.indexed import ann_kind

        t0 = time.perf_counter()
        self.texts_ = list(texts)
        self.words_ = [tuple(w) for w in words]
        self.vectors_ = np.ascontiguousarray(self.embedder(self.texts_), dtype=np.float32)  # (S, D)
        self.kind_ = ann_kind(self.kind, len(self.texts_))
        vectors = self.vectors_
        self.index_ = EmbeddingIndex(self.kind_).build(
            lambda: (vectors[a:a + 4096] for a in range(0, len(vectors), 4096)), len(vectors))
        logger.info("text embeddings of %d source rows and a faiss %s index in %.1fs", len(self.texts_), self.kind_,
                    time.perf_counter() - t0)
        return self

    def _best(self, vectors: np.ndarray, scored: np.ndarray, k: int = 1,
              exclude: Callable[[int, int], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(T,) best source row (-1: none) and its exact cosine; rows with `scored` False get -1 and -1.
        `exclude(t, row)`: a row that does not count (searched deeper until one that does is found)."""
        T = len(vectors)
        rows, score = np.full(T, -1, np.int64), np.full(T, -1.0)
        todo = np.flatnonzero(scored)
        depth = k if exclude is None else 16
        while len(todo):
            _, idx = self.index_.search(vectors[todo], min(depth, self.index_.n))
            left = []
            for q, cand in zip(todo, idx):
                ok = [int(c) for c in cand if c >= 0 and (exclude is None or not exclude(int(q), int(c)))]
                if ok:
                    rows[q] = ok[0]
                elif depth < self.index_.n and (cand >= 0).all():
                    left.append(q)
            todo, depth = np.array(left, np.int64), depth * 8
        has = np.flatnonzero(rows >= 0)
        score[has] = np.einsum("ij,ij->i", vectors[has].astype(np.float64), self.vectors_[rows[has]].astype(np.float64))
        return rows, score

    def best(self, texts: Sequence[str], words: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(T,) best source row (-1: none) and its cosine for each target (targets under min_words: -1, -1)."""
        scored = np.array([len(w) >= self.min_words for w in words], dtype=bool)
        vectors = self.embedder([t for t, s in zip(texts, scored) if s]) if scored.any() else None
        full = np.zeros((len(texts), self.vectors_.shape[1]), np.float32)
        if vectors is not None:
            full[scored] = vectors
        return self._best(full, scored)

    def null(self, n: int = 8, n_null: int = DEFAULT_NULL_SIZE, seed: int = 0) -> np.ndarray:
        """Best cosine of up to n_null distinct source texts of min_words+ words (a seeded sample) against the
        rest of the source, leaving out the rows each holds (`text_near.minhash_null`'s rule)."""
        first: dict[str, int] = {}
        for row, w in enumerate(self.words_):
            if len(w) >= self.min_words:
                first.setdefault(" ".join(w), row)
        eligible = sorted(first.values())
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(eligible, size=min(n_null, len(eligible)), replace=False)) if eligible else []
        words = [self.words_[i] for i in pick]
        keys = [" ".join(w) for w in words]
        grams = [_ngrams(w, n) for w in words]
        padded = [f" {k} " for k in keys]

        def exclude(t: int, c: int) -> bool:
            other = self.words_[c]
            joined = " ".join(other)
            if joined == keys[t] or not other:
                return True  # itself or an exact duplicate
            if len(other) <= len(words[t]) and f" {joined} " in padded[t]:
                return True  # a sub-phrase of the null text
            return len(other) >= n and not grams[t].isdisjoint(_ngrams(other, n))

        t0 = time.perf_counter()
        if not len(pick):
            return np.zeros(0)
        _, score = self._best(self.vectors_[np.asarray(pick)], np.ones(len(pick), bool), exclude=exclude)
        logger.info("embedding null: %d source texts against the rest in %.1fs", len(pick), time.perf_counter() - t0)
        return score[score > -1]

    def recall(self, words: Callable[[str], list[str]], threshold: float, copies: int = 200,
               k_values: Sequence[int] = (1, 2, 3), rng: np.random.Generator | None = None) -> dict:
        """Recall at `threshold` of edited copies made from the data: `copies` distinct source texts of
        min_words+ words, each with k words replaced, inserted or deleted (`text_overlap.perturb_sentence`), for
        every k in k_values, matched against the whole source (`text_near.calibrate_minhash`'s construction)."""
        from transferlab.contamination.text_overlap import perturb_sentence

        rng = rng if rng is not None else np.random.default_rng(0)
        k_values = [int(k) for k in k_values]
        first: dict[str, int] = {}
        for row, w in enumerate(self.words_):
            if len(w) >= self.min_words:
                first.setdefault(" ".join(w), row)
        eligible = sorted(first.values())
        chosen = rng.choice(eligible, size=min(copies, len(eligible)), replace=False) if eligible else []
        vocab = sorted({w for ws in self.words_ for w in ws})
        made, own, kind = [], [], []
        for k in k_values:
            for i in chosen:
                made.append(perturb_sentence(self.texts_[i], k, rng, vocab))
                own.append(int(i))
                kind.append(k)
        if not made:
            return {"copies": 0, "positives": 0, "k_values": k_values, "threshold": threshold, "recall": None,
                    "recall_by_k": {k: None for k in k_values}, "recall_original": None}
        made_words = [words(t) for t in made]
        rows, score = self.best(made, made_words)
        own, kind = np.array(own), np.array(kind)
        scored = np.array([len(w) >= self.min_words for w in made_words])
        found = score >= threshold - 1e-9
        same = np.array([r >= 0 and self.words_[r] == self.words_[o] for r, o in zip(rows, own)])

        def rate(mask: np.ndarray) -> float | None:
            return float(mask.mean()) if len(mask) else None

        return {"copies": len(chosen), "positives": len(made), "k_values": k_values, "threshold": threshold,
                "min_words": self.min_words, "unscored": int((~scored).sum()), "recall": rate(found[scored]),
                "recall_by_k": {k: rate(found[scored & (kind == k)]) for k in k_values},
                "recall_all": rate(found), "recall_original": rate((found & same)[scored]),
                "mean_cosine_by_k": {k: float(score[scored & (kind == k)].mean()) if (scored & (kind == k)).any()
                                     else None for k in k_values}}


__all__ = ["DEFAULT_TEXT_MODEL", "TextEmbedder", "TextEmbeddingIndex"]
