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
             grey 8 x 8 thumbnail's cosine, and the two hashes' nearest sources; the top few by the
             thumbnails of crop views (a 3 x 3 grid of places: cropped copies, either way round); and the
             same for the target mirrored left to right, scored mirrored (flipped copies). Retrieval by both the
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
    HASH_METHODS,
    _popcount,
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
CROP_VIEW = 0.8  # the crop views' side, as a fraction of the image's (the near-copies' crops: 0.75-0.9)
# Crop views per image: a 3 x 3 grid of places (corners, edge middles, centre). Five places (centre and corners)
# found 0.950 of the calibration's crops against 49,000 CIFAR-10 sources; docs/contamination.md has the grid's.
CROP_GRID = 3
N_CROP_VIEWS = CROP_GRID * CROP_GRID


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


def crop_thumbnails(grey: torch.Tensor, fraction: float = CROP_VIEW) -> torch.Tensor:
    """(N, 32, 32) grey -> (N * N_CROP_VIEWS, 64): the `thumbnails` of each image's crops of `fraction` x its side
    at a CROP_GRID x CROP_GRID grid of places, from corner to corner (rows N_CROP_VIEWS n .. N_CROP_VIEWS (n + 1) - 1
    belong to image n). A crop of 75-90 % of a photograph, resized back, has a thumbnail close to the nearest crop
    view of its original, and the original's thumbnail is close to one crop view of a copy that holds more than
    it: retrieval of cropped copies both ways round."""
    h, w = grey.shape[-2:]
    ch, cw = round(h * fraction), round(w * fraction)
    tops = [round(i * (h - ch) / (CROP_GRID - 1)) for i in range(CROP_GRID)]
    lefts = [round(i * (w - cw) / (CROP_GRID - 1)) for i in range(CROP_GRID)]
    crops = torch.stack([grey[:, a:a + ch, b:b + cw] for a in tops for b in lefts], 1)  # (N, views, ch, cw)
    return thumbnails(crops.reshape(-1, ch, cw))


def crop_view_exclude(exclude):
    """`exclude` for the queries' crop views (N_CROP_VIEWS rows per query, each with its query's group)."""
    return None if exclude is None else (np.repeat(exclude[0], N_CROP_VIEWS), exclude[1], exclude[2])


def nearest_rows(query: torch.Tensor, index: torch.Tensor, k: int, rep: int = 1, exclude=None) -> np.ndarray:
    """Top-k source rows per query by cosine: (N, k) int64, `index` row r being source row r // rep (rep views
    per source image). `exclude` (q_group (N,), group (S,), twins): leave out the sources of the query's own group
    (the null: itself and its exact twins); where fewer than k others exist, the first one repeats."""
    n = len(index)
    if exclude is None:
        return cosine_nearest(query, index, k=min(k, n))[0].numpy() // rep
    q_group, group, twins = exclude
    idx = cosine_nearest(query, index, k=min(k + twins * rep, n))[0].numpy() // rep
    other = group[idx] != q_group[:, None]
    order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # the others first, in their rank order
    idx, other = np.take_along_axis(idx, order, 1), np.take_along_axis(other, order, 1)
    return np.where(other, idx, idx[:, :1])


def hamming_rows(query: np.ndarray, source: np.ndarray, exclude=None, chunk: int = 256,
                 source_chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Nearest source hash per query hash: (row (N,), distance (N,)), ties to the lowest row; `exclude` as in
    `nearest_rows` (sources of the query's own group never count)."""
    if exclude is None:
        return hamming_nearest(query, source, chunk, source_chunk)
    q_group, group, _ = exclude
    query, source = (np.ascontiguousarray(np.asarray(h).astype(np.uint64)) for h in (query, source))
    index, distance = np.zeros(len(query), np.int64), np.zeros(len(query), np.int64)
    for a in range(0, len(query), chunk):
        q = query[a:a + chunk, None]
        best_d, best_i = np.full(len(q), 255, np.uint8), np.zeros(len(q), np.int64)
        rows = np.arange(len(q))
        for b in range(0, len(source), source_chunk):
            d = _popcount(q ^ source[None, b:b + source_chunk])  # (c, sc) uint8
            d[q_group[a:a + chunk, None] == group[None, b:b + source_chunk]] = 255  # itself and its twins: never
            j = d.argmin(axis=1)
            dj = d[rows, j]
            better = dj < best_d  # strict: an earlier tile (lower rows) keeps its ties
            best_d[better], best_i[better] = dj[better], j[better] + b
        index[a:a + chunk], distance[a:a + chunk] = best_i, best_d
    return index, distance


@dataclass
class Candidates:
    """Source rows the aligned method scores for each query: `plain` (N, C) with the query as it is, `flipped`
    (N, C') with the query mirrored left to right (None: flips not searched)."""

    plain: np.ndarray
    flipped: np.ndarray | None


def aligned_candidates(q_grey: torch.Tensor, q_emb: torch.Tensor | None, source: ImageFeatures, k: int = DEFAULT_K,
                       flip: bool = True, crops: bool = True, exclude=None,
                       hashes: dict[str, np.ndarray] | None = None) -> Candidates:
    """The aligned method's candidates (module docstring): for the query as it is, the top k sources by
    thumbnail and by embedding and the two hashes' nearest; with `crops`, the top k_c = max(2, k // 4) by the
    query's thumbnail against the sources' nine crop views and the top k_c of each of the query's nine crop views
    against the sources' thumbnails; with `flip`, for the mirrored query, its top k by thumbnail, its hashes'
    nearest and the embedding's top k (pooled CNN features hardly change under a mirror). `hashes`: the plain
    query's nearest rows per hash, when the caller has them already."""
    k = min(k, len(source))
    s_thumb = thumbnails(source.grey)
    plain = [nearest_rows(thumbnails(q_grey), s_thumb, k, exclude=exclude)]
    emb = None
    if q_emb is not None and source.embedding is not None:
        emb = nearest_rows(q_emb, source.embedding, k, exclude=exclude)
        plain.append(emb)
    for name in ("phash", "dhash"):
        if hashes is not None and name in hashes:
            plain.append(np.asarray(hashes[name]).reshape(-1, 1))
        else:
            plain.append(hamming_rows(HASH_METHODS[name](q_grey.float().numpy()), getattr(source, name),
                                      exclude)[0][:, None])
    if crops:
        kc = max(2, k // 4)
        plain.append(nearest_rows(thumbnails(q_grey), crop_thumbnails(source.grey), kc, rep=N_CROP_VIEWS,
                                  exclude=exclude))
        q_views = crop_thumbnails(q_grey)  # (N * N_CROP_VIEWS, 64)
        plain.append(nearest_rows(q_views, s_thumb, kc, exclude=crop_view_exclude(exclude))
                     .reshape(len(q_grey), N_CROP_VIEWS * kc))
    flipped = None
    if flip:
        mirror = q_grey.flip(-1)
        flipped = [nearest_rows(thumbnails(mirror), s_thumb, k, exclude=exclude)]
        m_np = mirror.float().numpy()
        flipped += [hamming_rows(HASH_METHODS[n](m_np), getattr(source, n), exclude)[0][:, None]
                    for n in ("phash", "dhash")]
        if emb is not None:
            flipped.append(emb)
        flipped = np.concatenate(flipped, axis=1)
    return Candidates(np.concatenate(plain, axis=1), flipped)


def _hash_result(method: str, target: np.ndarray, source: np.ndarray) -> MethodResult:
    index, distance = hamming_nearest(target, source)
    return MethodResult(method, index, distance.astype(np.float64))


def _aligned(target: ImageFeatures, source: ImageFeatures, k: int, hashes: dict[str, np.ndarray],
             flip: bool = True, crops: bool = True, pair_chunk: int = 8192) -> MethodResult:
    """Best aligned correlation over each target's candidates (`aligned_candidates`)."""
    cand = aligned_candidates(target.grey, target.embedding, source, k, flip, crops, hashes=hashes)
    return best_aligned(target.grey, source.grey, torch.from_numpy(cand.plain), pair_chunk,
                        None if cand.flipped is None else torch.from_numpy(cand.flipped))


def _pairs(cand: torch.Tensor, n_s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each distinct (target, source) pair of cand (T, C) once, sorted by target then source."""
    pairs = torch.unique(torch.arange(len(cand))[:, None] * n_s + cand.long())
    return pairs // n_s, pairs % n_s


def best_aligned(target_grey: torch.Tensor, source_grey: torch.Tensor, cand: torch.Tensor,
                 pair_chunk: int = 8192, flip_cand: torch.Tensor | None = None) -> MethodResult:
    """The aligned method's result from candidates: cand (T, C) source rows per target (repeats allowed); each
    distinct (target, source) pair scored once by `symmetric_pair_scores`, the best kept. flip_cand (T, C'):
    pairs scored with the target mirrored left to right (a flipped copy). Ties: the lowest source row."""
    n_t, n_s = len(target_grey), len(source_grey)
    t_rows, s_rows = _pairs(cand, n_s)
    scores = symmetric_pair_scores(target_grey, source_grey, t_rows, s_rows, chunk=pair_chunk)
    if flip_cand is not None:
        ft, fs = _pairs(flip_cand, n_s)
        f_scores = symmetric_pair_scores(target_grey.flip(-1), source_grey, ft, fs, chunk=pair_chunk)
        t_rows, s_rows, scores = torch.cat([t_rows, ft]), torch.cat([s_rows, fs]), torch.cat([scores, f_scores])
    best = torch.full((n_t,), -2.0, dtype=torch.float32).scatter_reduce(0, t_rows, scores, "amax")
    is_best = scores >= best[t_rows]
    first = torch.full((n_t,), n_s, dtype=torch.int64).scatter_reduce(0, t_rows[is_best], s_rows[is_best], "amin")
    return MethodResult("aligned", first.numpy().astype(np.int64), best.double().numpy())


def match_images(target: ImageFeatures, source: ImageFeatures, methods: Sequence[str] = IMAGE_METHODS,
                 k: int = DEFAULT_K, flip: bool = True, crops: bool = True) -> dict[str, MethodResult]:
    """Each method's best source for each target image (see the module docstring). `flip`: the aligned method
    also scores the mirrored target; `crops`: it also retrieves candidates by crop views (`aligned_candidates`)."""
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
        out["aligned"] = _aligned(target, source, k, {n: h.source for n, h in hashes.items()}, flip, crops)
    return {m: out[m] for m in methods}


# ---- calibration on the tool's own near-copies --------------------------------------------------------------
def _rate(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def calibrate_images(source: ImageFeatures, read_rgb: Callable[[int], np.ndarray], embedder: Embedder | None,
                     methods: Sequence[str] = IMAGE_METHODS, thresholds: dict[str, float] | None = None,
                     n_copied: int = 200, n_negatives: int = 500, k: int = DEFAULT_K, seed: int = 0,
                     sweep: dict[str, Sequence[float]] | None = None, flip: bool = True,
                     crops: bool = True) -> dict:
    """Recall, false-positive rate and precision of each method, and of "any method", at `thresholds`.

    n_negatives source images are held out of the index: their nearest sources are strangers, unless the
    source holds near-copies within itself (then they count as false positives: an upper bound). `near_copies`
    of n_copied other source images (read_rgb(row) -> H x W x 3 uint8; seed `seed`) are the positives: one is
    *found* by a method when the method's best source is its own original and within the threshold. Precision
    holds at the mix of positives and negatives returned. `sweep`: method -> thresholds at which recall per
    kind and FPR are also returned (to choose defaults). Returns numbers only (JSON-ready)."""
    cache: dict[str, ImageFeatures] = {}

    def search(queries: ImageFeatures, held: np.ndarray, keep: np.ndarray) -> dict[str, MethodResult]:
        if "index" not in cache:
            cache["index"] = source.subset(keep)
        found = match_images(queries, cache["index"], methods, k, flip, crops)
        return {m: MethodResult(m, np.where(r.source >= 0, keep[np.maximum(r.source, 0)], -1), r.score)
                for m, r in found.items()}  # rows of the source, as `near_copy_report` counts them

    return near_copy_report(len(source), read_rgb, embedder, search, source.subset, methods, thresholds, n_copied,
                            n_negatives, seed, sweep)


def near_copy_report(n: int, read_rgb: Callable[[int], np.ndarray], embedder: Embedder | None,
                     search: Callable[[ImageFeatures, np.ndarray, np.ndarray], dict[str, MethodResult]],
                     features_of: Callable[[np.ndarray], ImageFeatures], methods: Sequence[str] = IMAGE_METHODS,
                     thresholds: dict[str, float] | None = None, n_copied: int = 200, n_negatives: int = 500,
                     seed: int = 0, sweep: dict[str, Sequence[float]] | None = None) -> dict:
    """`calibrate_images` for any search: `search(queries, held, keep)` matches query features against the n
    source rows without the held-out ones (`keep`: the others, sorted) and returns results in source rows;
    `features_of(rows)`: the source's own features of those rows (the negatives)."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    if n < 3:
        raise ValueError(f"calibration needs at least 3 source images, got {n}")
    n_negatives = min(n_negatives, n // 3)
    n_copied = min(n_copied, n - n_negatives)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    held, copied = np.sort(order[:n_negatives]), order[n_negatives:n_negatives + n_copied]
    keep = np.sort(order[n_negatives:])

    copies, own, kind_of = [], [], []
    for row in copied:
        for kind, img in near_copies(np.asarray(read_rgb(int(row))), rng).items():
            copies.append(img)
            own.append(int(row))
            kind_of.append(kind)
    own, kind_of = np.array(own, dtype=np.int64), np.array(kind_of)
    copy_feats = features_from_arrays(copies, [f"copy{i}" for i in range(len(copies))], embedder)
    pos = search(copy_feats, held, keep)
    neg = search(features_of(held), held, keep) if n_negatives else None

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
