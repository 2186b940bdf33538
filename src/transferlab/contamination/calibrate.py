"""Thresholds chosen on the data being checked, to a stated false-positive rate.

    null = null_scores(source_feats, ("phash", "aligned"))        # best-match scores of distinct source images
    choice = data_threshold("aligned", null.scores["aligned"], fpr=0.001, reference_share=null.reference_share)
    choice.threshold, choice.null_rate, choice.disabled, choice.warning

A fixed threshold means different things on different data: CIFAR-10's defaults (`detect.DEFAULT_THRESHOLDS`)
flag nearly every clean 8 x 8 digit, because at that resolution every digit has a close look-alike. What a
threshold should promise is a false-positive rate on the data at hand: of the target images that copy nothing,
at most the share `fpr` is flagged. That needs the distribution of a method's best-match score for an image that
copies nothing in the source (the null distribution), estimated from the source itself.

The null (leave one out): a seeded sample of up to `n_null` source images, each matched against all the other
source images by the search the check runs on targets (the same features, the same nearest-hash, top-k cosine
and aligned-correlation steps, `detect.best_aligned` scoring the candidates), with its own row and any source
image whose pixels equal its own left out (an exact twin is the same image, not a distinct one). Why this
construction:
- It is the real search, on the real data: the same classes, the same resolution, the same look-alikes. On
  digits a test image's nearest training image is of its own class (1-nearest-neighbour on the raw pixels is
  96 % right), so a null of best matches against *other* classes only would be far too easy and its threshold
  far too loose; a folder without classes could not build it at all.
- Against the whole source less one image, not half of it: the best of S candidates is closer than the best of
  S/2, so a null searched against half the source (two seeded halves) would understate the rate at which
  targets find a close stranger. Leaving one out keeps the sizes equal (S - 1 against S, less any exact twins);
  what difference remains is corrected for: if a null image's best match is within the threshold with
  probability p against R candidates, it is 1 - (1 - p)^(S/R) against S when the candidates are independent,
  so the rate aimed at on the null is 1 - (1 - fpr)^(R/S) (`reference_share` = the mean R/S).
- Near-copies that the source holds of itself stay in the null (only exact twins can be told apart without the
  method under test): they make the null closer than genuine strangers, the threshold stricter and the rate
  below fpr on clean targets, at some cost in recall (the synthetic copies' recall reports it). CIFAR-10's
  training set holds such near-copies; digits holds none.

The threshold is an order statistic of the null: with N null scores and m = floor(fpr' N) of them allowed
within it (fpr' the size-corrected rate), the loosest threshold that at most m null scores reach. Hash
distances are integers (lower is closer): the largest distance d with at most m null distances <= d; when more
than m null images already lie at distance 0 no threshold reaches the rate and the method is disabled for the
run (8 x 8 digits: many distinct digits share a hash). Similarities (higher is closer): just above the
(m + 1)-th highest null score, rounded up to 4 decimals; disabled when that passes the similarity's maximum, 1.
With N < 1 / fpr, m is 0: the threshold lies beyond every null score, and the achieved rate (0) has a one-sided
95 % upper bound of about 3 / N, which `null_rate_upper95` reports.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from transferlab.contamination.detect import (
    DEFAULT_K,
    DEFAULT_THRESHOLDS,
    HIGHER_IS_CLOSER,
    THRESHOLD_RANGES,
    aligned_candidates,
    best_aligned,
    hamming_rows,
    match_rule,
    within,
)
from transferlab.contamination.image_features import ImageFeatures
from transferlab.contamination.image_matching import cosine_nearest

logger = logging.getLogger(__name__)

DEFAULT_FPR = 0.001
DEFAULT_NULL_SIZE = 5000  # null images at most: 5 null scores within the threshold at fpr 0.001
THRESHOLD_MODES = ("data", "fixed")
FIXED_RATE_WARNING = 0.01  # a fixed threshold that flags more of the null than this is warned about
_DECIMALS = 4  # similarity thresholds are rounded up to this many decimals
_TOLERANCE = 1e-6  # `detect.within` accepts similarities this far below the threshold (float rounding)


@dataclass
class NullScores:
    """Best-match scores of null images (distinct source images against the rest): method -> (N,) float64."""

    scores: dict[str, np.ndarray]
    n_source: int
    reference_share: float  # mean share of the source each null image was searched against
    seed: int
    seconds: float

    @property
    def n(self) -> int:
        return len(next(iter(self.scores.values()))) if self.scores else 0


def null_scores(source: ImageFeatures, methods: Sequence[str], k: int = DEFAULT_K, n_null: int = DEFAULT_NULL_SIZE,
                seed: int = 0, flip: bool = True, crops: bool = True) -> NullScores:
    """Each method's best-match score for a seeded sample of min(n_null, S) source images, each searched against
    the source without itself and its exact twins (module docstring). `methods`: thresholded image methods;
    `flip`, `crops`: the aligned method's search, as the targets get it (`detect.aligned_candidates`)."""
    methods = [m for m in methods if m in THRESHOLD_RANGES]
    n_source = len(source)
    if n_source < 2:
        raise ValueError(f"a null distribution needs at least 2 source images, got {n_source}")
    if "embedding" in methods and source.embedding is None:
        raise ValueError("the embedding method needs the source's embeddings (an Embedder)")
    t0 = time.perf_counter()
    queries = np.random.default_rng(seed).permutation(n_source)[:min(n_null, n_source)]
    _, group = np.unique(np.array(source.keys, dtype=str), return_inverse=True)  # equal pixels: one group
    sizes = np.bincount(group)
    q_group = group[queries]
    if (sizes[q_group] == n_source).any():
        raise ValueError("every source image is an exact twin of the others: no distinct images to calibrate on")
    twins = int(sizes.max())  # the most rows a query must skip
    exclude = (q_group, group, twins)
    scores, nearest = {}, {}
    for name in ("phash", "dhash"):
        if name in methods or "aligned" in methods:
            index, distance = hamming_rows(getattr(source, name)[queries], getattr(source, name), exclude)
            nearest[name] = index  # a candidate of the aligned method, as in the real search
            if name in methods:
                scores[name] = distance.astype(np.float64)
    if "embedding" in methods:
        scores["embedding"] = _cosine_nearest_other(source.embedding, queries, group, 1, twins)[1][:, 0]
    if "aligned" in methods:
        pick = torch.from_numpy(queries)
        q_emb = None if source.embedding is None else source.embedding[pick]
        cand = aligned_candidates(source.grey[pick], q_emb, source, min(k, n_source - 1), flip, crops, exclude,
                                  hashes=nearest)
        scores["aligned"] = best_aligned(source.grey[pick], source.grey, torch.from_numpy(cand.plain),
                                         flip_cand=None if cand.flipped is None else
                                         torch.from_numpy(cand.flipped)).score
    seconds = time.perf_counter() - t0
    share = float(np.mean(n_source - sizes[q_group])) / n_source
    logger.info("null of %d source images, each against the %.1f %% of the source that is not itself: %.1fs",
                len(queries), 100 * share, seconds)
    return NullScores({m: scores[m] for m in methods}, n_source, share, seed, round(seconds, 1))


def _cosine_nearest_other(vectors: torch.Tensor, queries: np.ndarray, group: np.ndarray, k: int,
                          twins: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of other groups by cosine for each query row: (indices (N, k), scores (N, k)). The search asks
    `cosine_nearest` for k + twins rows, of which at most `twins` (itself and its exact twins, whose vectors
    equal its own) are left out; where fewer than k remain, the first one fills the row (a repeat)."""
    n = len(vectors)
    idx, sc = cosine_nearest(vectors[torch.from_numpy(queries)], vectors, k=min(k + twins, n))
    idx, sc = idx.numpy(), sc.double().numpy()
    other = group[idx] != group[queries][:, None]  # (N, k + twins)
    order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # the others first, in their rank order
    idx, sc, other = (np.take_along_axis(a, order, axis=1) for a in (idx, sc, other))
    idx = np.where(other, idx, idx[:, :1])  # only where the source has fewer than k others: repeat the first
    sc = np.where(other, sc, sc[:, :1])
    return idx, sc


@dataclass
class ThresholdChoice:
    """How one method's threshold was chosen and what it does on the null. `threshold` None: the method is
    disabled for the run (it cannot reach the rate). JSON-ready with `to_dict`."""

    method: str
    threshold: float | None
    mode: str  # "data": from the null at `fpr`; "fixed": given (--threshold) or the CIFAR-10 default
    fpr: float | None = None  # the rate asked for (data mode)
    n_null: int = 0
    null_rate: float | None = None  # share of the null scores within the threshold
    null_rate_upper95: float | None = None  # one-sided 95 % upper bound of the rate, from n_null scores
    disabled_because: str | None = None  # why no threshold was chosen, in a few words
    warning: str | None = None
    given: bool = False  # fixed: from --threshold (else the CIFAR-10 default)

    @property
    def disabled(self) -> bool:
        return self.threshold is None

    @property
    def how(self) -> str:
        """For people: 'data-calibrated at fpr 0.001 from 1797 null scores', 'fixed (--threshold)', ..."""
        if self.mode == "fixed":
            return "fixed (--threshold)" if self.given else "fixed (the CIFAR-10 default)"
        if self.disabled:
            return f"disabled: {self.disabled_because}"
        return f"data-calibrated at fpr {self.fpr:g} from {self.n_null} null scores"

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("method")
        out["disabled"], out["chosen"] = self.disabled, self.how
        return out


def null_profile(method: str, scores: np.ndarray) -> dict:
    """Where a method's null scores lie: the median, the score the closest 1 % of null images reach, the closest."""
    closeness = np.asarray(scores, dtype=np.float64) * (1 if HIGHER_IS_CLOSER[method] else -1)
    sign = 1 if HIGHER_IS_CLOSER[method] else -1
    return {"median": float(np.median(scores)), "closest_1pct": sign * float(np.quantile(closeness, 0.99)),
            "closest": sign * float(closeness.max())}


def upper95(hits: int, n: int) -> float | None:
    """One-sided 95 % (Clopper-Pearson) upper bound of a rate seen `hits` times in `n` trials."""
    if n == 0:
        return None
    if hits >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(0.95, hits + 1, n - hits))


def data_threshold(method: str, scores: np.ndarray, fpr: float = DEFAULT_FPR,
                   reference_share: float = 1.0) -> ThresholdChoice:
    """The loosest threshold that at most floor(fpr' N) of the N null scores reach, fpr' the rate at the null's
    reference size (1 - (1 - fpr) ** reference_share); disabled (threshold None) when none does."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        raise ValueError(f"{method}: no null scores to calibrate on")
    allowed = math.floor(n * (1 - (1 - fpr) ** reference_share) + 1e-9)  # null scores allowed within (< n)
    high = THRESHOLD_RANGES[method][1]
    if HIGHER_IS_CLOSER[method]:
        v = np.sort(scores)[::-1][allowed]  # the closest null score that must stay outside
        step = 10.0 ** _DECIMALS
        t = math.ceil((v + 2 * _TOLERANCE) * step) / step  # `within` accepts t - 1e-6: v stays outside
        threshold = t if t <= high else None
        blocked = f"{int((scores >= v).sum())} of {n} distinct source images score {v:.4f} or more"
    else:
        counts = np.cumsum(np.bincount(scores.astype(np.int64), minlength=int(high) + 1))  # null scores <= d
        ok = np.flatnonzero(counts <= allowed)
        threshold = float(ok[-1]) if len(ok) else None
        blocked = f"{int(counts[0])} of {n} distinct source images lie at distance 0 from another"
    choice = ThresholdChoice(method, threshold, "data", fpr, n)
    if threshold is None:
        choice.disabled_because = f"no threshold reaches fpr {fpr:g} on this data ({blocked})"
        choice.warning = (f"{method} disabled for this run: {choice.disabled_because}; to this method, distinct "
                          "images of this data look like copies of each other")
        return choice
    hits = int(within(method, scores, threshold).sum())
    choice.null_rate, choice.null_rate_upper95 = hits / n, upper95(hits, n)
    return choice


def fixed_threshold(method: str, threshold: float, null: NullScores | None, given: bool) -> ThresholdChoice:
    """A given (or default) threshold, with its rate on the null when there is one (and a warning when that
    rate exceeds FIXED_RATE_WARNING: the threshold does not suit this data)."""
    choice = ThresholdChoice(method, float(threshold), "fixed", given=given)
    if null is not None and method in null.scores:
        scores = null.scores[method]
        hits = int(within(method, scores, threshold).sum())
        choice.n_null, choice.null_rate = len(scores), hits / len(scores)
        choice.null_rate_upper95 = upper95(hits, len(scores))
        if choice.null_rate > FIXED_RATE_WARNING:
            choice.warning = (f"{method}: the fixed threshold ({match_rule(method, threshold)}) flags "
                              f"{choice.null_rate:.3f} of distinct source images matched against the rest of the "
                              "source: expect about as many false positives among the targets")
    return choice


@dataclass
class Thresholds:
    """Every thresholded method's choice, the null they were chosen (or checked) on, and the warnings."""

    mode: str
    fpr: float
    choices: dict[str, ThresholdChoice]
    null: NullScores | None
    warnings: list[str]

    def null_rate_any(self) -> float | None:
        """Share of the null images that some enabled method flags: the rate of the "dirty" rule (any method)."""
        if self.null is None or not self.null.n:
            return None
        hit = np.zeros(self.null.n, dtype=bool)
        for m, c in self.choices.items():
            if not c.disabled and m in self.null.scores:
                hit |= within(m, self.null.scores[m], c.threshold)
        return float(hit.mean())

    def to_dict(self) -> dict:
        """summary.json's "thresholds" (without the per-method entries, which join the methods' own)."""
        null = None if self.null is None else {
            "n": self.null.n, "n_source": self.null.n_source, "reference_share": round(self.null.reference_share, 4),
            "seed": self.null.seed, "seconds": self.null.seconds,
            "construction": "a seeded sample of source images, each matched against the rest of the source (without "
                            "itself and its exact twins) by the same search as the targets",
            "scores": {m: null_profile(m, v) for m, v in self.null.scores.items()}}
        return {"mode": self.mode, "fpr": self.fpr if self.mode == "data" else None, "null": null,
                "null_rate_any": self.null_rate_any()}


LOW_COPY_RECALL = 0.9  # below this share of the run's own near-copies found, a data-calibrated run warns


def low_recall_warnings(chosen: Thresholds, calibration: dict | None) -> list[str]:
    """A warning when the data-calibrated thresholds find fewer than LOW_COPY_RECALL of the near-copies the run made
    from its own source ("any method" recall of the calibration). A clean verdict is then weak evidence for the
    copy kinds it misses. Two causes were measured (docs/contamination.md): images too small for the copy kinds
    (8x8 digits), and a source that holds near-duplicates of itself, whose null then scores like copies and lifts
    the thresholds above them (CIFAR-10: "any method" recall 0.78, crops 0.24, at 50,000 sources)."""
    overall = (calibration or {}).get("any") or {}
    recall = overall.get("recall")
    calibrated = [m for m, c in chosen.choices.items() if c.mode == "data" and not c.disabled]
    if recall is None or recall >= LOW_COPY_RECALL or not calibrated:
        return []
    missed = ", ".join(f"{kind} {r:.2f}" for kind, r in (overall.get("recall_by_kind") or {}).items()
                       if r is not None and r < LOW_COPY_RECALL)
    return [f"the data-calibrated thresholds find {recall:.2f} of the near-copies made from this source (below "
            f"{LOW_COPY_RECALL}; by kind: {missed}): copies of those kinds may go unflagged. The usual causes are "
            "images too small for those edits, or a source holding near-duplicates of itself, which the null "
            "counts as strangers and which lift the thresholds; --threshold-mode fixed or --threshold shows what "
            "looser thresholds flag"]


def choose_thresholds(source: ImageFeatures, methods: Sequence[str], mode: str = "data", fpr: float = DEFAULT_FPR,
                      given: dict[str, float] | None = None, k: int = DEFAULT_K, n_null: int = DEFAULT_NULL_SIZE,
                      seed: int = 0, flip: bool = True, crops: bool = True,
                      null_scorer: Callable[..., NullScores] | None = None) -> Thresholds:
    """Each thresholded method's threshold: `given` (--threshold) wins; else, in mode "data", from the null at
    `fpr`, in mode "fixed", the CIFAR-10 default. The null is computed whenever n_null > 0 and the source holds
    2 images or more (in mode "fixed" too: it reports the fixed thresholds' rate on this data). `null_scorer`:
    `null_scores` by default; the store's search (`indexed.StoreIndex.null_scores`, `source` the StoreIndex)."""
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}")
    given = given or {}
    thresholded = [m for m in methods if m in THRESHOLD_RANGES]
    null = None
    if thresholded and n_null > 0 and len(source) >= 2:
        null = (null_scorer or null_scores)(source, thresholded, k, n_null, seed, flip, crops)
    choices = {}
    for m in thresholded:
        if m in given or mode == "fixed":
            choices[m] = fixed_threshold(m, given.get(m, DEFAULT_THRESHOLDS[m]), null, given=m in given)
        elif null is None:
            why = "--null-size is 0" if n_null <= 0 else f"the source holds {len(source)} image"
            c = ThresholdChoice(m, None, "data", fpr, disabled_because=f"no null distribution to calibrate on ({why})")
            c.warning = (f"{m} disabled for this run: {c.disabled_because}; give --threshold {m}=VALUE or "
                         "--threshold-mode fixed")
            choices[m] = c
        else:
            choices[m] = data_threshold(m, null.scores[m], fpr, null.reference_share)
    warnings = [c.warning for c in choices.values() if c.warning]
    calibrated = [m for m, c in choices.items() if c.mode == "data" and not c.disabled]
    if null is not None and calibrated and null.n * fpr < 1:
        bound = upper95(0, null.n)
        warnings.append(f"the null holds {null.n} images, fewer than 1 / fpr = {1 / fpr:g}: the data-calibrated "
                        f"thresholds ({', '.join(calibrated)}) lie beyond every null score, and a rate of 0 on "
                        f"{null.n} images only bounds the false-positive rate at {bound:.3g} (95 %)")
    for w in warnings:
        logger.warning("%s", w)
    return Thresholds(mode, fpr, choices, null, warnings)


__all__ = ["DEFAULT_FPR", "DEFAULT_NULL_SIZE", "FIXED_RATE_WARNING", "NullScores", "THRESHOLD_MODES",
           "ThresholdChoice", "Thresholds", "choose_thresholds", "data_threshold", "fixed_threshold", "null_scores",
           "upper95"]
