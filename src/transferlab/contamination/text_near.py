"""Near-copies of edited texts: MinHash + locality-sensitive hashing (`datasketch`), verified by exact Jaccard.

    index = MinHashIndex().fit(source_words)                   # word lists, normalised (`text_overlap.tokenizer`)
    null = minhash_null(index, n=8)                            # best-match Jaccard of source rows that copy nothing
    choice = jaccard_threshold(null, fpr=0.001)                # the threshold, from the data itself
    rows, jaccard = index.best(target_words)                   # (T,) best source row (-1: none), its Jaccard
    calibrate_minhash(index, source_texts, words, choice.threshold)  # recall of 1-, 2-, 3-word edits

Why: a word n-gram breaks at every edit, so GPT-3's 8-gram rule misses edited copies of short texts (SST-2's
rows, median 6 words: recall 0.53 for 1-3 edits, docs/contamination.md). The Jaccard similarity of two texts'
shingle sets degrades gracefully instead: one substituted word of a 10-word row leaves 9 of 11 words shared.

- Shingles: the set of word k-grams of the normalised text (`shingle`, default 1: the set of words). Measured on
  sst2_clean (docs/contamination.md): at the same false-positive rate, single words find 3-word edits far
  better than 2- or 3-grams (every edit breaks k shingles), on rows this short.
- Candidates: `datasketch.MinHash` (`num_perm` permutations) of every distinct source set in a `MinHashLSH`
  tuned to Jaccard `candidate_jaccard` (0.3), well below any threshold the calibration chooses (about 0.6 on
  SST-2), so a true pair is missed by the bands with small probability; every candidate's Jaccard is then
  computed exactly on the sets, so MinHash's estimation error never decides a match, only which pairs are
  looked at. A target with no candidate scores 0.
- Which texts: targets of at least `min_words` words (default 8, GPT-3's smallest n: below it the paper
  found overlaps to be mostly spurious, and a few shared words are a large Jaccard); shorter targets score 0
  (the n-gram method's short rule covers them).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_SHINGLE = 1
DEFAULT_NUM_PERM = 128
DEFAULT_CANDIDATE_JACCARD = 0.3
DEFAULT_MIN_WORDS = 8
DEFAULT_FPR = 0.001
DEFAULT_NULL_SIZE = 5000
_DECIMALS = 4


def shingles(words: Sequence[str], k: int = DEFAULT_SHINGLE) -> frozenset[str]:
    """The set of word k-grams of `words` (space-joined); the whole text as one shingle when it is shorter."""
    if len(words) <= k:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + k]) for i in range(len(words) - k + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


class MinHashIndex:
    """Distinct source texts (normalised word lists) in a MinHash LSH index; best-match by exact Jaccard.

    shingle: words per shingle. num_perm: MinHash permutations. candidate_jaccard: the LSH's threshold (pairs
    below it are rarely candidates). min_words: targets shorter than this score 0. seed: MinHash's seed."""

    def __init__(self, shingle: int = DEFAULT_SHINGLE, num_perm: int = DEFAULT_NUM_PERM,
                 candidate_jaccard: float = DEFAULT_CANDIDATE_JACCARD, min_words: int = DEFAULT_MIN_WORDS,
                 seed: int = 1):
        self.shingle = shingle
        self.num_perm = num_perm
        self.candidate_jaccard = candidate_jaccard
        self.min_words = min_words
        self.seed = seed

    def _minhashes(self, sets: Sequence[frozenset]):
        from datasketch import MinHash

        return MinHash.bulk([[s.encode("utf-8") for s in st] for st in sets], num_perm=self.num_perm, seed=self.seed)

    def fit(self, source_words: Sequence[Sequence[str]]) -> MinHashIndex:
        """Index each distinct non-empty normalised text once (its first source row stands for it)."""
        from datasketch import MinHashLSH

        if self.shingle < 1 or self.num_perm < 16 or not 0 < self.candidate_jaccard < 1 or self.min_words < 1:
            raise ValueError("MinHashIndex needs shingle >= 1, num_perm >= 16, 0 < candidate_jaccard < 1, "
                             "min_words >= 1")
        t0 = time.perf_counter()
        self.key_: dict[str, int] = {}  # normalised text -> distinct id
        self.rows_: list[int] = []  # distinct id -> first source row
        self.words_: list[tuple[str, ...]] = []
        for row, words in enumerate(source_words):
            if not words:
                continue
            key = " ".join(words)
            if key not in self.key_:
                self.key_[key] = len(self.rows_)
                self.rows_.append(row)
                self.words_.append(tuple(words))
        self.sets_ = [shingles(w, self.shingle) for w in self.words_]
        self.lsh_ = MinHashLSH(threshold=self.candidate_jaccard, num_perm=self.num_perm)
        with self.lsh_.insertion_session() as session:
            for i, mh in enumerate(self._minhashes(self.sets_)):
                session.insert(i, mh, check_duplication=False)
        logger.info("MinHash LSH over %d distinct source texts in %.1fs", len(self.rows_), time.perf_counter() - t0)
        return self

    def _best(self, words: Sequence[Sequence[str]], exclude: Callable[[int, int], bool] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T,) best distinct id (-1: none), its exact Jaccard, candidates looked at; targets under min_words
        get -1 and 0. `exclude(t, distinct id)` drops a candidate."""
        T = len(words)
        best = np.full(T, -1, dtype=np.int64)
        score = np.zeros(T, dtype=np.float64)
        n_cand = np.zeros(T, dtype=np.int64)
        todo = [t for t in range(T) if len(words[t]) >= self.min_words]
        sets = [shingles(words[t], self.shingle) for t in todo]
        for t, st, mh in zip(todo, sets, self._minhashes(sets)):
            cands = sorted(self.lsh_.query(mh))  # lowest id first: ties go to the earliest source row
            n_cand[t] = len(cands)
            for c in cands:
                if exclude is not None and exclude(t, c):
                    continue
                j = jaccard(st, self.sets_[c])
                if j > score[t]:
                    best[t], score[t] = c, j
        return best, score, n_cand

    def best(self, words: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(T,) best source row (-1: none) and its exact Jaccard for each target word list."""
        ids, score, _ = self._best(words)
        rows = np.array([self.rows_[i] if i >= 0 else -1 for i in ids], dtype=np.int64)
        return rows, score


# ---------------------------------------------------------------------------------------------- the null


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def minhash_null(index: MinHashIndex, n: int = 8, n_null: int = DEFAULT_NULL_SIZE, seed: int = 0) -> np.ndarray:
    """Best-match Jaccard of up to `n_null` distinct source texts (of at least `index.min_words` words, a
    seeded sample) against the rest of the source, leaving out, for each, the rows it *holds*: itself (exact
    duplicates are one distinct text already), any row sharing a word n-gram with it, and any row whose whole
    text occurs inside it (a sub-phrase). What remains are texts that copy nothing of it by the n-gram rule.

    Why this null and not a held-out half of the source against the other half: text has no classes for
    "different class" nulls, and a corpus's rows are not independent of each other. SST-2's rows are nodes of
    the same parse trees (a sentence, its clauses, its phrases), spread over both halves, so a held-out row's
    best match in the other half is often its own clause: that null is full of real copies and its threshold
    would be near 1 (no recall). Leaving out what shares an n-gram or is contained removes exactly those, and
    matches the population where this method matters: a target that the n-gram method already flags is dirty
    whatever MinHash says, so the false positives that count are among rows the n-gram rule calls clean.
    Leave-one-out (not halves) also keeps the search as large as the targets' (S - 1 texts against S).
    What it cannot remove: near-copies the source holds of itself with no shared n-gram (edited duplicates);
    they make the threshold stricter, not looser."""
    eligible = [i for i, w in enumerate(index.words_) if len(w) >= index.min_words]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(eligible, size=min(n_null, len(eligible)), replace=False)) if eligible else []
    words = [index.words_[i] for i in pick]
    grams = [_ngrams(w, n) for w in words]
    padded = [f" {' '.join(w)} " for w in words]

    def exclude(t: int, c: int) -> bool:
        if c == pick[t]:
            return True
        other = index.words_[c]
        if len(other) <= len(words[t]) and f" {' '.join(other)} " in padded[t]:
            return True  # a sub-phrase of the null text (or the text itself)
        return len(other) >= n and not grams[t].isdisjoint(_ngrams(other, n))

    t0 = time.perf_counter()
    _, score, _ = index._best(words, exclude)
    logger.info("MinHash null: %d source texts against the rest in %.1fs", len(words), time.perf_counter() - t0)
    return score


@dataclass
class JaccardThreshold:
    """The minhash threshold and how it was chosen. `threshold` None: disabled (no value reaches the rate)."""

    threshold: float | None
    chosen: str
    fpr: float | None = None
    n_null: int = 0
    null_rate: float | None = None
    null_rate_upper95: float | None = None
    null_median: float | None = None
    null_closest: float | None = None
    warning: str | None = None

    @property
    def disabled(self) -> bool:
        return self.threshold is None

    def to_dict(self) -> dict:
        return {**asdict(self), "disabled": self.disabled}


def jaccard_threshold(null: np.ndarray, fpr: float = DEFAULT_FPR,
                      floor: float = DEFAULT_CANDIDATE_JACCARD, method: str = "minhash") -> JaccardThreshold:
    """The loosest Jaccard threshold that at most m = floor(fpr N) of the N null scores reach: just above the
    (m + 1)-th highest, rounded up to 4 decimals (the rule of the image thresholds, `calibrate.data_threshold`),
    and never below `floor` (the LSH's candidate threshold: scores under it are not all seen). With N < 1 / fpr,
    m = 0 and the threshold lies beyond every null score. Disabled when that passes 1. `method`: the name in the
    messages (the text `embedding` method uses the same rule on cosines, floor 0)."""
    from transferlab.contamination.calibrate import upper95

    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    null = np.asarray(null, dtype=np.float64)
    n = len(null)
    if n == 0:
        return JaccardThreshold(None, "disabled: no source text of enough words to calibrate on", fpr, 0,
                                warning=f"{method} disabled: the source has no text long enough for its null")
    allowed = math.floor(n * fpr + 1e-9)
    v = np.sort(null)[::-1][allowed]
    step = 10.0 ** _DECIMALS
    t = max(math.ceil((v + 2e-6) * step) / step, floor)
    profile = {"null_median": float(np.median(null)), "null_closest": float(null.max())}
    if t > 1.0:
        return JaccardThreshold(None, f"disabled: no threshold reaches fpr {fpr:g} ({int((null >= v).sum())} of {n} "
                                "null texts are that close to another)", fpr, n, **profile,
                                warning=f"{method} disabled: distinct texts of this source are as close as "
                                "copies (identical word sets, or cosine 1)")
    hits = int((null >= t - 1e-9).sum())
    warning = (f"{method}: {n} null texts are fewer than 1 / fpr: the threshold lies beyond every null score; the "
               f"rate's 95% upper bound is {upper95(hits, n):.4f}") if n * fpr < 1 else None
    return JaccardThreshold(t, f"data-calibrated at fpr {fpr:g} from {n} null texts", fpr, n, hits / n,
                            upper95(hits, n), **profile, warning=warning)


# ---------------------------------------------------------------------------------------------- recall


def calibrate_minhash(index: MinHashIndex, source_texts: Sequence[str], words: Callable[[str], list[str]],
                      threshold: float, copies: int = 200, k_values: Sequence[int] = (1, 2, 3),
                      rng: np.random.Generator | None = None) -> dict:
    """Recall of the threshold on edited copies made from the data: `copies` distinct source texts of at least
    `index.min_words` words, each with k words replaced, inserted or deleted (`perturb_sentence`, vocabulary =
    the source's words) for every k in k_values, matched against the whole source (their originals included).
    A copy is found when its best Jaccard reaches the threshold; `recall_original` counts those whose best
    source is the original text itself. `recall` and `recall_by_k` are over the copies the method scores (of
    at least min_words words: a deletion can take an 8-word text under it; `unscored` counts those), and
    `recall_all` counts the unscored copies as missed. Returns numbers only."""
    from transferlab.contamination.text_overlap import perturb_sentence

    rng = rng if rng is not None else np.random.default_rng(0)
    k_values = [int(k) for k in k_values]
    eligible = [i for i, w in enumerate(index.words_) if len(w) >= index.min_words]
    chosen = rng.choice(eligible, size=min(copies, len(eligible)), replace=False) if eligible else []
    vocab = sorted({w for ws in index.words_ for w in ws})
    made, own, kind = [], [], []
    for k in k_values:
        for i in chosen:
            made.append(words(perturb_sentence(source_texts[index.rows_[i]], k, rng, vocab)))
            own.append(int(i))
            kind.append(k)
    if not made:
        return {"copies": 0, "positives": 0, "k_values": k_values, "threshold": threshold, "recall": None,
                "recall_by_k": {k: None for k in k_values}, "recall_original": None}
    ids, score, _ = index._best(made)
    own, kind = np.array(own), np.array(kind)
    scored = np.array([len(w) >= index.min_words for w in made])
    found = score >= threshold - 1e-9
    to_original = found & (ids == own)

    def rate(mask: np.ndarray) -> float | None:
        return float(mask.mean()) if len(mask) else None

    return {"copies": len(chosen), "positives": len(made), "k_values": k_values, "threshold": threshold,
            "min_words": index.min_words, "unscored": int((~scored).sum()), "recall": rate(found[scored]),
            "recall_by_k": {k: rate(found[scored & (kind == k)]) for k in k_values},
            "recall_all": rate(found), "recall_original": rate(to_original[scored]),
            "mean_jaccard_by_k": {k: float(score[scored & (kind == k)].mean()) if (scored & (kind == k)).any()
                                  else None for k in k_values}}


__all__ = ["MinHashIndex", "JaccardThreshold", "calibrate_minhash", "jaccard", "jaccard_threshold",
           "minhash_null", "shingles"]
