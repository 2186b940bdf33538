"""Match target images against source images by every method, and calibrate the methods' thresholds.

    found = match_images(target_feats, source_feats, methods=IMAGE_METHODS)
    found["aligned"].source, found["aligned"].score       # (T,) best source row (-1: none), its score
    found["aligned"].dirty(threshold)                     # (T,) bools
    report = calibrate_images(source_feats, read_rgb, embedder)   # recall per copy kind, FPR, precision

The thresholds a run uses are chosen in `calibrate` (on the source's own null distribution, or fixed).

Methods (`image_matching` and `aligned` hold the formulas):
- exact      the decoded pixels are equal (sha256 of the pixel array); score 1 or 0;
- phash      64-bit DCT hash, Hamming distance (lower is closer);
- dhash      64-bit difference hash, Hamming distance;
- embedding  cosine similarity of a model's pooled features (the bundled EfficientNet-Lite0 by default);
- aligned    normalised cross-correlation over shifts and crop scales (`aligned.aligned_scores`) of the
             target with each of its candidates: the top `k` sources by embedding cosine, the top `k` by a
             grey 8 x 8 thumbnail's cosine, and the two hashes' nearest sources. Retrieval by both the
             embedding (roughly shift-invariant) and the thumbnail (exact on blurred and recoloured copies)
             is what makes shifted and cropped copies findable; the correlation is what tells them from
             strangers (docs/contamination.md shows both measured).
Search is exact and chunked: memory grows with T + S, never T x S.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.contamination.aligned import symmetric_pair_scores
from transferlab.contamination.image_features import (
    Embedder,
    ImageFeatures,
    features_from_arrays,
)
from transferlab.contamination.image_matching import (
    COPY_KINDS,
    cosine_nearest,
    exact_matches,
    hamming_nearest,
    near_copies,
)

logger = logging.getLogger(__name__)

IMAGE_METHODS = ("exact", "phash", "dhash", "embedding", "aligned")
# The fixed thresholds (`--threshold-mode fixed`; by default each run chooses its own on the source's null
# distribution, `calibrate.choose_thresholds`), calibrated on CIFAR-10 at 32 px
# (benchmarks/contamination_calibration.py; the table in docs/contamination.md). aligned:
# recall >= 0.95 over the tool's near-copies with a cross-class false-positive rate of 0.001. The hashes find only
# rescaled, recoloured and re-encoded copies (aligned finds those too): phash <= 4 finds >= 0.98 of them; dhash
# <= 5 finds 0.85-0.97 and only reaches 0.95 at 9, where 4 % of strangers match; looser hash thresholds match
# look-alikes (small planes in an empty sky) among CIFAR's own test-train pairs. embedding: where its false
# positives stay near 0 (it finds colour-jittered copies, little else).
DEFAULT_THRESHOLDS = {"phash": 4, "dhash": 5, "embedding": 0.93, "aligned": 0.90}
HIGHER_IS_CLOSER = {"exact": True, "phash": False, "dhash": False, "embedding": True, "aligned": True}
THRESHOLD_RANGES = {"phash": (0, 64), "dhash": (0, 64), "embedding": (-1.0, 1.0), "aligned": (-1.0, 1.0)}
DEFAULT_K = 10


def match_rule(method: str, threshold: float | None) -> str:
    """How a method decides, for people: "distance <= 8", "score >= 0.9", "pixels equal"."""
    if method == "exact":
        return "pixels equal"
    return f"{'score >=' if HIGHER_IS_CLOSER[method] else 'distance <='} {threshold:g}"


def check_threshold(method: str, value: float) -> float:
    """`value` if it is a threshold the method can use (hash distances as ints), else ValueError (one line)."""
    low, high = THRESHOLD_RANGES[method]
    if not low <= value <= high:
        raise ValueError(f"{method} threshold must be in {low:g}..{high:g}, got {value:g}")
    if not HIGHER_IS_CLOSER[method]:
        # a Hamming distance counts differing bits: 2.5 would act as 2 without saying so
        if not float(value).is_integer():
            raise ValueError(f"{method} threshold is a Hamming distance, a whole number of bits 0..64, got {value:g}")
        return int(value)
    return value


@dataclass
class MethodResult:
    """One method's best source for each target: `source` (T,) int64 row (-1: none), `score` (T,) float64."""

    method: str
    source: np.ndarray
    score: np.ndarray

    def dirty(self, threshold: float | None = None) -> np.ndarray:
        if self.method == "exact":
            return self.source >= 0
        t = DEFAULT_THRESHOLDS[self.method] if threshold is None else threshold
        return within(self.method, self.score, t) & (self.source >= 0)


def within(method: str, score: np.ndarray, threshold: float) -> np.ndarray:
    """Which scores the threshold accepts: similarities >= it (less 1e-6, for float rounding), distances <= it."""
    score = np.asarray(score)
    return score >= threshold - 1e-6 if HIGHER_IS_CLOSER[method] else score <= threshold


def thumbnails(grey: torch.Tensor) -> torch.Tensor:
    """(N, 32, 32) grey -> (N, 64) 8 x 8 area-averaged, mean removed, L2-normalised."""
    t = F.adaptive_avg_pool2d(grey.float()[:, None], 8).flatten(1)
    return F.normalize(t - t.mean(1, keepdim=True), dim=1, eps=1e-12)


def _hash_result(method: str, target: np.ndarray, source: np.ndarray) -> MethodResult:
    index, distance = hamming_nearest(target, source)
    return MethodResult(method, index, distance.astype(np.float64))


def _aligned(target: ImageFeatures, source: ImageFeatures, k: int, extra: list[np.ndarray],
             pair_chunk: int = 8192) -> MethodResult:
    """Best aligned correlation over each target's candidates (top-k thumbnails, top-k embeddings, extra)."""
    k = min(k, len(source))
    cand = [cosine_nearest(thumbnails(target.grey), thumbnails(source.grey), k=k)[0]]
    if target.embedding is not None and source.embedding is not None:
        cand.append(cosine_nearest(target.embedding, source.embedding, k=k)[0])
    cand.extend(torch.as_tensor(e).view(-1, 1) for e in extra)
    return best_aligned(target.grey, source.grey, torch.cat(cand, dim=1), pair_chunk)


def best_aligned(target_grey: torch.Tensor, source_grey: torch.Tensor, cand: torch.Tensor,
                 pair_chunk: int = 8192) -> MethodResult:
    """The aligned method's result from candidates: cand (T, C) source rows per target (repeats allowed); each
    distinct (target, source) pair scored once by `symmetric_pair_scores`, the best kept."""
    n_t, n_s = len(target_grey), len(source_grey)
    # each distinct (target, source) pair once: the lists overlap (a copy is often first in all of them)
    pairs = torch.unique(torch.arange(n_t)[:, None] * n_s + cand.long())
    t_rows, s_rows = pairs // n_s, pairs % n_s
    scores = symmetric_pair_scores(target_grey, source_grey, t_rows, s_rows, chunk=pair_chunk)
    best = torch.full((n_t,), -2.0, dtype=torch.float32).scatter_reduce(0, t_rows, scores, "amax")
    # the best pair's source; on a tie the lowest source row (pairs are sorted by target, then source)
    is_best = scores >= best[t_rows]
    first = torch.full((n_t,), len(pairs), dtype=torch.int64).scatter_reduce(
        0, t_rows[is_best], torch.arange(len(pairs))[is_best], "amin")
    return MethodResult("aligned", s_rows[first].numpy().astype(np.int64), best.double().numpy())


def match_images(target: ImageFeatures, source: ImageFeatures, methods: Sequence[str] = IMAGE_METHODS,
                 k: int = DEFAULT_K) -> dict[str, MethodResult]:
    """Each method's best source for each target image (see the module docstring)."""
    unknown = [m for m in methods if m not in IMAGE_METHODS]
    if unknown:
        raise ValueError(f"unknown image method(s) {unknown}; choose from {', '.join(IMAGE_METHODS)}")
    if len(source) == 0:
        raise ValueError("the source holds no images: nothing to match against")
    if "embedding" in methods and (target.embedding is None or source.embedding is None):
        raise ValueError("the embedding method needs embeddings of both sets (an Embedder)")
    out: dict[str, MethodResult] = {}
    if len(target) == 0:
        empty = np.zeros(0)
        return {m: MethodResult(m, empty.astype(np.int64), empty) for m in methods}
    if "exact" in methods:
        index = exact_matches(target.keys, source.keys)
        out["exact"] = MethodResult("exact", index, (index >= 0).astype(np.float64))
    hashes = {}
    for name in ("phash", "dhash"):
        if name in methods or "aligned" in methods:
            hashes[name] = _hash_result(name, getattr(target, name), getattr(source, name))
            if name in methods:
                out[name] = hashes[name]
    if "embedding" in methods:
        idx, score = cosine_nearest(target.embedding, source.embedding, k=1)
        out["embedding"] = MethodResult("embedding", idx[:, 0].numpy().astype(np.int64),
                                        score[:, 0].double().numpy())
    if "aligned" in methods:
        out["aligned"] = _aligned(target, source, k, [h.source for h in hashes.values()])
    return {m: out[m] for m in methods}


# ---- calibration on the tool's own near-copies --------------------------------------------------------------
def _rate(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def calibrate_images(source: ImageFeatures, read_rgb: Callable[[int], np.ndarray], embedder: Embedder | None,
                     methods: Sequence[str] = IMAGE_METHODS, thresholds: dict[str, float] | None = None,
                     n_copied: int = 200, n_negatives: int = 500, k: int = DEFAULT_K, seed: int = 0,
                     sweep: dict[str, Sequence[float]] | None = None) -> dict:
    """Recall, false-positive rate and precision of each method, and of "any method", at `thresholds`.

    n_negatives source images are held out of the index: their nearest sources are strangers, unless the
    source holds near-copies within itself (then they count as false positives: an upper bound). `near_copies`
    of n_copied other source images (read_rgb(row) -> H x W x 3 uint8; seed `seed`) are the positives: one is
    *found* by a method when the method's best source is its own original and within the threshold. Precision
    holds at the mix of positives and negatives returned. `sweep`: method -> thresholds at which recall per
    kind and FPR are also returned (to choose defaults). Returns numbers only (JSON-ready)."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    n = len(source)
    if n < 3:
        raise ValueError(f"calibration needs at least 3 source images, got {n}")
    n_negatives = min(n_negatives, n // 3)
    n_copied = min(n_copied, n - n_negatives)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    held, copied = np.sort(order[:n_negatives]), order[n_negatives:n_negatives + n_copied]
    keep = np.sort(order[n_negatives:])
    index = source.subset(keep)
    row_in_index = np.full(n, -1, dtype=np.int64)
    row_in_index[keep] = np.arange(len(keep))

    copies, own, kind_of = [], [], []
    for row in copied:
        for kind, img in near_copies(np.asarray(read_rgb(int(row))), rng).items():
            copies.append(img)
            own.append(row_in_index[row])
            kind_of.append(kind)
    own, kind_of = np.array(own, dtype=np.int64), np.array(kind_of)
    copy_feats = features_from_arrays(copies, [f"copy{i}" for i in range(len(copies))], embedder)
    pos = match_images(copy_feats, index, methods, k)
    neg = match_images(source.subset(held), index, methods, k) if n_negatives else None

    def stats(found_pos: np.ndarray, found_neg: np.ndarray | None) -> dict:
        tp, fp = int(found_pos.sum()), int(found_neg.sum()) if found_neg is not None else 0
        return {"recall": _rate(tp, len(found_pos)),
                "recall_by_kind": {kd: _rate(int(found_pos[kind_of == kd].sum()), int((kind_of == kd).sum()))
                                   for kd in COPY_KINDS},
                "false_positive_rate": _rate(fp, len(found_neg)) if found_neg is not None else None,
                "precision": _rate(tp, tp + fp), "tp": tp, "fp": fp}

    result = {"n_sources": len(keep), "n_copied": len(copied), "n_copies": len(copies),
              "n_negatives": int(n_negatives), "kinds": list(COPY_KINDS), "seed": seed, "methods": {}}
    any_pos = np.zeros(len(copies), dtype=bool)
    any_neg = np.zeros(n_negatives, dtype=bool)
    for m in methods:
        t = thresholds.get(m)
        hit_pos = pos[m].dirty(t) & (pos[m].source == own)
        hit_neg = neg[m].dirty(t) if neg is not None else None
        any_pos |= hit_pos
        if hit_neg is not None:
            any_neg |= hit_neg
        entry = {"threshold": t if m != "exact" else None, "match_if": match_rule(m, t), **stats(hit_pos, hit_neg)}
        if sweep and m in sweep:
            entry["sweep"] = [{"threshold": float(s), **stats(pos[m].dirty(s) & (pos[m].source == own),
                                                              neg[m].dirty(s) if neg is not None else None)}
                              for s in sweep[m]]
        result["methods"][m] = entry
    result["any"] = stats(any_pos, any_neg if neg is not None else None)
    return result
