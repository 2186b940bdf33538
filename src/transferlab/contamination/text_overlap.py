"""Word n-gram overlap between a source corpus (the data a model was (pre-)trained on) and target examples
(an evaluation set): which target examples the source already holds.

    matches = text_overlap(train_texts, test_texts)            # n chosen from the test lengths (GPT-3's rule)
    clean = [m.target_id for m in matches if not m.dirty]      # score these beside the full set

The rules follow GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", arXiv:2005.14165):
- Appendix C, "Overlap methodology": N is "the 5th percentile example length in words, ignoring all
  punctuation, whitespace, and casing"; "a minimum value of 8 on non-synthetic tasks" (spurious collisions
  below) and "a maximum value of 13 for all tasks" -> `choose_n`. A "'dirty' example [is] one with any N-gram
  overlap with any training document, and a 'clean' example [is] one with no collision" -> `TextMatch.dirty`.
- Section 4: dirty examples are "examples that have a 13-gram overlap with anything in the pretraining set (or
  that overlap with the whole example when it is shorter than 13-grams)" -> short_rule="contained" (default): a
  target of fewer than n words is dirty when its whole word sequence occurs, contiguously, in a source row.
  Appendix C says instead that examples "less than 8 words long" were "ignored in our filtering process" and
  warns that they give many false positives; short_rule="exact" flags them only when they equal a whole
  source row. `TextMatch.n_words` lets a report set them apart either way.
- Appendix C, "Initial training set filtering": a gram is "a lowercase, whitespace delimited word with no
  punctuation" -> `normalize`.
  Real corpora glue words with separators that have no spaces around them (`Islamic\\militants`, escaped
  markup `&lt;br&gt;`), which deleting punctuation turns into one word; `normalize_words` (the default
  normalisation of `TextOverlap`, "words") makes every separator a word boundary, unescapes HTML entities and
  can drop tags; "gpt3" keeps GPT-3's (`tokenizer`).
- Boilerplate (`max_ngram_rows`): GPT-3's training-set filtering ignored 13-grams found in more than 10
  documents; here an n-gram in more than `max_ngram_rows` source rows is set aside (off by default in the
  library, 50 in the command).

Index: every source n-gram is a 64-bit hash (word -> id -> splitmix64 code, then a polynomial over the n
codes with an odd multiplier), kept in one sorted array beside the position it starts at: 16 bytes per source
n-gram, plus 8 per source word (its id); the exact-copy table holds each distinct normalised source row once.
A posting list is the slice of equal hashes. Every candidate match is then verified word by word against the
source, so a hash collision costs time, never a wrong result; with random codes two different n-grams collide
with probability 2**-64, i.e. about Q*K/2**64 spurious candidates for Q target and K source n-grams (~1e-8 for
a million of each). At most `max_postings` occurrences of one n-gram are examined (lowest rows first): an
n-gram found more often still counts as shared, but only those occurrences vote for `source_id`. (GPT-3's
training-set *filtering* ignored 13-grams found in more than 10 documents; its overlap analysis, reproduced
here, did not.)
"""
from __future__ import annotations

import functools
import html
import logging
import re
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

SHORT_RULES = ("contained", "exact")
MAX_SHARED_NGRAMS = 20  # n-grams listed per match, for a page to mark
_PAIR_BUDGET = 1 << 22  # candidate (target n-gram, source occurrence) pairs verified at once: bounds memory
_BASE = np.uint64(0xD6E8FEB86659FD93)  # odd, so every power of it is invertible mod 2**64

# ---------------------------------------------------------------------------------------------- normalisation


@functools.lru_cache(maxsize=1)
def _strip_table() -> dict[int, None]:
    """Code points `normalize` deletes: punctuation (P*), symbols (S*), and control/format characters that
    are not whitespace (Cc, Cf: e.g. soft hyphen, zero-width joiner). Letters, marks and numbers stay, so
    scripts with combining vowel signs (Devanagari, Thai) keep their words; regex `\\w` would cut them.
    About 9,000 entries, built once in ~0.4 s."""
    table = {}
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] in "PS" or (cat in ("Cc", "Cf") and not chr(cp).isspace()):
            table[cp] = None
    return table


def normalize(text: str, strip_punctuation: bool = True) -> list[str]:
    """The words of `text` as GPT-3 counts them: NFKC, lower case, punctuation and symbols deleted, split on
    (Unicode) whitespace. Deleting, not replacing, keeps one whitespace-delimited token one word:
    "don't" -> "dont", "well-made" -> "wellmade", "snake_case" -> "snakecase", "3.5" -> "35"; a token made
    only of punctuation ("," "--" "...") disappears, and an em dash without spaces joins its neighbours.
    NFKC makes composed and decomposed accents, full-width letters and ligatures equal.

    strip_punctuation=False is exactly `text.lower().split()` (punctuation tokens are words): the
    normalisation of the SST-2 data README's measurement."""
    if not strip_punctuation:
        return text.lower().split()
    return unicodedata.normalize("NFKC", text).lower().translate(_strip_table()).split()


NORMALIZATIONS = ("words", "gpt3", "whitespace")
DEFAULT_NORMALIZATION = "words"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'"})
_LONE_APOSTROPHE = re.compile(r"(?<![^\s'])'|'(?![^\s'])")  # one not between two word characters
# a tag: <br>, </p>, <p class=x>, <br/>, <a href="...">; a comment. A letter must follow "<" or "</", so "a < b"
# and "<3" are text.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.DOTALL)


@functools.lru_cache(maxsize=1)
def _separator_table() -> dict[int, str | None]:
    """Code points `normalize_words` turns into a space: punctuation (P*) and symbols (S*) except the
    apostrophe (kept for the inside-a-word rule), and control characters (Cc). Format characters (Cf: soft
    hyphen, zero-width joiner) are deleted: they sit inside words without separating them."""
    table: dict[int, str | None] = {}
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if ch == "'" or ch.isspace():
            continue
        cat = unicodedata.category(ch)
        if cat[0] in "PS" or cat == "Cc":
            table[cp] = " "
        elif cat == "Cf":
            table[cp] = None
    return table


def unescape_html(text: str, rounds: int = 5) -> str:
    """`html.unescape` until the text stops changing (at most `rounds` times): "&amp;lt;b&amp;gt;" -> "<b>"."""
    for _ in range(rounds):
        if "&" not in text:
            break
        out = html.unescape(text)
        if out == text:
            break
        text = out
    return text


def strip_tags(text: str) -> str:
    """`text` with every markup tag and comment replaced by a space (after `unescape_html`, escaped tags too)."""
    return _TAG.sub(" ", unescape_html(text)) if "<" in text or "&" in text else text


def has_markup(texts: Sequence[str], min_rows: int = 2, min_share: float = 0.001) -> bool:
    """Whether `texts` hold markup: tags (escaped or not) in at least `min_rows` rows and `min_share` of them.
    Two rows, not one: a single "<i>" in a review is more likely a typo than a markup corpus."""
    hits = sum(1 for t in texts if ("<" in t or "&" in t) and _TAG.search(unescape_html(t)))
    return hits >= max(min_rows, min_share * len(texts))


def normalize_words(text: str, strip_markup: bool = False) -> list[str]:
    """The words of `text` with separators as word boundaries, for corpora as they come: HTML entities
    unescaped until stable ("&amp;lt;" -> "<"), markup tags dropped when `strip_markup`, NFKC, lower case,
    then every character that is not a letter, mark or number becomes a space, except an apostrophe between
    two word characters, and whitespace splits. So "Islamic\\militants" -> ["islamic", "militants"],
    "well-made" -> ["well", "made"], "and/or" -> ["and", "or"], "3.5" -> ["3", "5"], "don't" -> ["don't"]
    (also with a typographic apostrophe), "'s" -> ["s"]; "&lt;br&gt;" -> ["br"], or nothing with strip_markup.
    GPT-3's `normalize` deletes punctuation instead, which glues words that a separator without spaces joins
    ("islamicmilitants") and loses every n-gram across it."""
    text = unescape_html(text)
    if strip_markup and "<" in text:
        text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES).translate(_separator_table())
    if "'" in text:
        text = _LONE_APOSTROPHE.sub(" ", text)
    return text.split()


def tokenizer(normalization: str = DEFAULT_NORMALIZATION, strip_markup: bool = False):
    """text -> words under one of NORMALIZATIONS: "words" (`normalize_words`, the default), "gpt3" (GPT-3's
    `normalize`: punctuation deleted) or "whitespace" (`text.lower().split()`, the SST-2 README's counting).
    strip_markup applies to every one (tags dropped before the words are read)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if normalization == "words":
        return functools.partial(normalize_words, strip_markup=strip_markup)
    strip = normalization == "gpt3"
    if strip_markup:
        return lambda text: normalize(strip_tags(text), strip)
    return functools.partial(normalize, strip_punctuation=strip)


def choose_n(texts: Sequence[str], low: int = 8, high: int = 13, strip_punctuation: bool = True,
             words=None) -> int:
    """GPT-3's n for a target set: the 5th percentile of its example lengths in words, clamped to [low, high].

    The percentile is an actual example length (numpy method "lower": the length at sorted index
    floor(0.05 * (k - 1))), so fewer than 5% of the examples are shorter than the unclamped value.
    `words`: the tokenizer (text -> words) that counts the lengths; default `words(t)`."""
    if not 1 <= low <= high:
        raise ValueError(f"choose_n needs 1 <= low <= high, got low={low}, high={high}")
    if len(texts) == 0:
        raise ValueError("choose_n needs at least one text")
    words = words or functools.partial(normalize, strip_punctuation=strip_punctuation)
    lengths = np.array([len(words(t)) for t in texts])
    p5 = int(np.percentile(lengths, 5, method="lower"))
    return min(max(p5, low), high)


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TextMatch:
    """One target example against the source. `shared`/`total` count the target's distinct n-grams (a target
    shorter than n words has one gram, itself: total 1, shared 1 when the short rule finds it)."""
    target_id: int  # 0-based row of the target list
    source_id: int | None  # the exact copy's row, else the row sharing the most n-grams (lowest on ties), else None
    shared: int  # distinct target n-grams found anywhere in the source
    total: int  # distinct target n-grams (0 for a target with no words)
    overlap: float  # shared / total, 0..1 (0.0 when total is 0)
    exact: bool  # the normalised target equals a normalised source row
    dirty: bool  # exact or shared >= 1: GPT-3's rule
    n_words: int  # words of the normalised target; < n means the short rule applied
    n: int
    shared_ngrams: tuple[str, ...]  # up to MAX_SHARED_NGRAMS shared n-grams (normalised words), in target order
    boilerplate: int = 0  # distinct target n-grams found in the source but set aside (in > max_ngram_rows rows)

    def dirty_at(self, threshold: float = 0.0) -> bool:
        """Exact, or at least one shared n-gram and overlap >= threshold; threshold 0 is `dirty`."""
        return self.exact or (self.shared >= 1 and self.overlap >= threshold)


@dataclass(frozen=True)
class MethodMatch:
    """One target example under one method: "exact" (score 1.0 or 0.0) or f"ngram{n}" (score = overlap)."""
    target_id: int
    method: str
    score: float
    dirty: bool
    source_id: int | None


# ---------------------------------------------------------------------------------------------- hashing


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit code per word id (Steele et al.'s splitmix64 finaliser), so codes look independent."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def _windows(starts: np.ndarray, m: int) -> np.ndarray:
    """Start positions (in the flat word array) of every m-word window inside one row, ascending."""
    lengths = np.diff(starts)
    if len(lengths) == 0 or m < 1:
        return np.zeros(0, dtype=np.int64)
    row = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(int(starts[-1]), dtype=np.int64)
    return pos[pos + m <= starts[1:][row]]


def _hash_at(codes: np.ndarray, pos: np.ndarray, m: int, mask: np.uint64) -> np.ndarray:
    """Hash of the m words starting at each of `pos`: sum_j codes[p + j] * BASE**(m - 1 - j) mod 2**64."""
    h = np.zeros(len(pos), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(m):
            h = h * _BASE + codes[pos + j]
    return h & mask


def _expand(lo: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every i the indices lo[i] .. lo[i] + count[i] - 1, and the i each came from."""
    owner = np.repeat(np.arange(len(lo)), count)
    first = np.cumsum(count) - count
    idx = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(first, count) + np.repeat(lo, count)
    return owner, idx


def _distinct_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a 2-D int array: the index of each distinct row's first occurrence (in lexicographic order of the
    rows) and, per row, the number of its distinct row in that order. np.unique(axis=0) does the same, ~30x
    slower (it sorts a void view)."""
    order = np.lexsort(a.T[::-1])  # stable: equal rows keep their order, so a group's head is its first
    s = a[order]
    head = np.ones(len(a), dtype=bool)
    head[1:] = (s[1:] != s[:-1]).any(axis=1)
    inverse = np.empty(len(a), dtype=np.int64)
    inverse[order] = np.cumsum(head) - 1
    return order[head], inverse


def _same_words(words_a: np.ndarray, pos_a: np.ndarray, words_b: np.ndarray, pos_b: np.ndarray, m: int) -> np.ndarray:
    """Whether the m words at each pos_a (in words_a) equal those at pos_b (in words_b): the exact check."""
    ok = np.ones(len(pos_a), dtype=bool)
    for j in range(m):
        ok &= words_a[pos_a + j] == words_b[pos_b + j]
    return ok


@dataclass
class _Encoded:
    """Normalised rows as one flat array of word ids: row r is words[starts[r]:starts[r + 1]]."""
    words: np.ndarray  # (W,) int64
    starts: np.ndarray  # (R + 1,) int64
    tokens: list[list[str]] | None = None  # kept for targets only (to print shared n-grams)


# ---------------------------------------------------------------------------------------------- the index


class TextOverlap:
    """Exact and word n-gram matching of target examples against a source corpus.

        overlap = TextOverlap().fit(train_texts)
        matches = overlap.match(test_texts)           # list[TextMatch], one per target row
        overlap.exact_matches(test_texts)             # list[MethodMatch], method "exact"
        overlap.ngram_matches(test_texts)             # list[MethodMatch], method f"ngram{n}"

    n: words per n-gram; None chooses it per target set with `choose_n(targets, low, high)`.
    normalization: one of NORMALIZATIONS (`tokenizer`): "words" (separators are word boundaries, HTML
        entities unescaped; the default), "gpt3" (GPT-3's: punctuation deleted) or "whitespace".
    strip_markup: drop markup tags before reading the words (`has_markup` tells when a corpus has them).
    strip_punctuation: the older spelling of the choice, kept for callers: True is "gpt3", False
        "whitespace"; None (default) defers to `normalization`.
    max_ngram_rows: boilerplate. An n-gram found in more than this many distinct source rows is set aside:
        it is not shared, does not vote for `source_id`, and makes no target dirty on its own (the count is
        `TextMatch.boilerplate`; `boilerplate_ngrams(n)` counts the source's). None: every n-gram counts
        (GPT-3's overlap analysis). GPT-3's training-set filtering ignored 13-grams found in more than 10
        documents for the same reason: phrases every document repeats (licences, headers, "this film is one
        of the") are not evidence of a copy. Short targets (the short rule) and exact copies are unaffected.
    short_rule: "contained" (a target shorter than n words is dirty when its whole word sequence occurs in a
        source row: GPT-3 Section 4) or "exact" (only when it equals a source row).
    max_postings: occurrences of one n-gram examined for verification and the `source_id` vote.
    hash_bits: bits of the n-gram hash kept; lower it only to test that collisions are verified away.
    The index for each n is built on first use and kept (16 bytes per source n-gram).
    """

    def __init__(self, n: int | None = None, *, normalization: str = DEFAULT_NORMALIZATION,
                 strip_markup: bool = False, strip_punctuation: bool | None = None, short_rule: str = "contained",
                 max_postings: int = 1000, max_ngram_rows: int | None = None, low: int = 8, high: int = 13,
                 hash_bits: int = 64):
        self.n = n
        self.normalization = normalization
        self.strip_markup = strip_markup
        self.strip_punctuation = strip_punctuation
        self.max_ngram_rows = max_ngram_rows
        self.short_rule = short_rule
        self.max_postings = max_postings
        self.low = low
        self.high = high
        self.hash_bits = hash_bits

    def _check_params(self) -> None:
        if self.n is not None and (not isinstance(self.n, (int, np.integer)) or self.n < 1):
            raise ValueError(f"n must be a positive integer or None, got {self.n!r}")
        if self.short_rule not in SHORT_RULES:
            raise ValueError(f"short_rule must be one of {SHORT_RULES}, got {self.short_rule!r}")
        if not isinstance(self.max_postings, (int, np.integer)) or self.max_postings < 1:
            raise ValueError(f"max_postings must be a positive integer, got {self.max_postings!r}")
        if not 1 <= self.low <= self.high:
            raise ValueError(f"need 1 <= low <= high, got low={self.low}, high={self.high}")
        if not 1 <= self.hash_bits <= 64:
            raise ValueError(f"hash_bits must be in 1..64, got {self.hash_bits!r}")
        if self.max_ngram_rows is not None and (not isinstance(self.max_ngram_rows, (int, np.integer))
                                                or self.max_ngram_rows < 1):
            raise ValueError(f"max_ngram_rows must be a positive integer or None, got {self.max_ngram_rows!r}")
        self.words_ = tokenizer(self.normalization_, self.strip_markup)

    @property
    def normalization_(self) -> str:
        """The normalisation in use ("words", "gpt3" or "whitespace")."""
        if self.strip_punctuation is None:
            return self.normalization
        return "gpt3" if self.strip_punctuation else "whitespace"

    # -- fitting

    def fit(self, source_texts: Sequence[str]) -> TextOverlap:
        """Normalise and encode the source rows; n-gram indexes are built when a match needs them."""
        self._check_params()
        t0 = time.perf_counter()
        self.vocab_: dict[str, int] = {}
        self.exact_: dict[str, int] = {}  # normalised text -> first source row holding it
        ids: list[int] = []
        starts = [0]
        for row, text in enumerate(source_texts):
            tokens = self.words_(text)
            ids.extend(self.vocab_.setdefault(w, len(self.vocab_)) for w in tokens)
            starts.append(len(ids))
            if tokens:
                self.exact_.setdefault(" ".join(tokens), row)
        self.source_ = _Encoded(np.array(ids, dtype=np.int64), np.array(starts, dtype=np.int64))
        self.n_rows_ = len(starts) - 1
        self._index: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._boiler: dict[int, tuple[np.ndarray, int]] = {}
        logger.debug("encoded %d source rows (%d words, %d distinct) in %.2fs", self.n_rows_, len(ids),
                     len(self.vocab_), time.perf_counter() - t0)
        return self

    def _codes(self, ids: np.ndarray) -> np.ndarray:
        return _splitmix64(ids)

    def _ngram_index(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, start positions) of every source n-gram, sorted by hash, then position (so by row)."""
        if n not in self._index:
            src = self.source_
            pos = _windows(src.starts, n)
            h = _hash_at(self._codes(src.words), pos, n, _mask(self.hash_bits))
            order = np.argsort(h, kind="stable")
            self._index[n] = (h[order], pos[order])
            logger.debug("indexed %d source %d-grams", len(pos), n)
        return self._index[n]

    def _boilerplate(self, n: int) -> np.ndarray:
        """(W,) bool over source word positions: the n-gram starting there is in more than `max_ngram_rows`
        distinct source rows. Counted on the words themselves (not the hash), so it is exact."""
        if n not in self._boiler:
            src = self.source_
            flag = np.zeros(len(src.words), dtype=bool)
            n_grams = 0
            pos = _windows(src.starts, n)
            if self.max_ngram_rows is not None and len(pos):
                _, gram = _distinct_rows(src.words[pos[:, None] + np.arange(n)])  # gram id per window
                row = np.searchsorted(src.starts, pos, side="right") - 1
                R = max(self.n_rows_, 1)
                rows_of = np.bincount(np.unique(gram * R + row) // R, minlength=int(gram.max()) + 1)
                heavy = rows_of > self.max_ngram_rows
                flag[pos] = heavy[gram]
                n_grams = int(heavy.sum())
            self._boiler[n] = (flag, n_grams)
            if n_grams:
                logger.info("%d source %d-grams occur in more than %d rows: set aside as boilerplate", n_grams,
                            n, self.max_ngram_rows)
        return self._boiler[n][0]

    def boilerplate_ngrams(self, n: int) -> int:
        """How many distinct source n-grams are set aside as boilerplate (0 when max_ngram_rows is None)."""
        self._boilerplate(n)
        return self._boiler[n][1]

    def _encode_targets(self, target_texts: Sequence[str]) -> _Encoded:
        """Target rows in the source's word ids; words the source lacks get ids past the vocabulary."""
        extra: dict[str, int] = {}
        base = len(self.vocab_)
        ids: list[int] = []
        starts = [0]
        tokens_all = []
        for text in target_texts:
            tokens = self.words_(text)
            tokens_all.append(tokens)
            for w in tokens:
                i = self.vocab_.get(w)
                ids.append(i if i is not None else extra.setdefault(w, base + len(extra)))
            starts.append(len(ids))
        return _Encoded(np.array(ids, dtype=np.int64), np.array(starts, dtype=np.int64), tokens_all)

    def n_for(self, target_texts: Sequence[str]) -> int:
        """The n a match of these targets uses: the given n, else `choose_n` over them."""
        if self.n is not None:
            return int(self.n)
        return choose_n(target_texts, self.low, self.high, words=self.words_)

    # -- the two methods

    def _exact(self, tgt: _Encoded) -> np.ndarray:
        """(T,) source row of each target's exact copy, -1 where none (a target with no words has none)."""
        return np.array([self.exact_.get(" ".join(t), -1) if t else -1 for t in tgt.tokens], dtype=np.int64)

    def _ngrams(self, tgt: _Encoded, n: int):
        """Targets of >= n words: shared and total distinct n-grams, best source row, shared n-gram strings."""
        T = len(tgt.tokens)
        shared = np.zeros(T, dtype=np.int64)
        total = np.zeros(T, dtype=np.int64)
        best = np.full(T, -1, dtype=np.int64)
        boiler_count = np.zeros(T, dtype=np.int64)
        strings: dict[int, list[str]] = {}
        tpos = _windows(tgt.starts, n)
        if len(tpos) == 0:
            return shared, total, best, strings, boiler_count
        trow = np.searchsorted(tgt.starts, tpos, side="right") - 1
        # distinct n-grams per target, compared on the words (not the hash), in order of first appearance
        grams = tgt.words[tpos[:, None] + np.arange(n)]  # (M, n)
        first = np.sort(_distinct_rows(np.column_stack([trow, grams]))[0])
        tpos, trow = tpos[first], trow[first]  # (Q,): one entry per distinct (target, n-gram)
        total = np.bincount(trow, minlength=T).astype(np.int64)

        src_hash, src_pos = self._ngram_index(n)
        qh = _hash_at(self._codes(tgt.words), tpos, n, _mask(self.hash_bits))
        lo = np.searchsorted(src_hash, qh, side="left")
        count = np.minimum(np.searchsorted(src_hash, qh, side="right") - lo, self.max_postings)
        found = np.zeros(len(tpos), dtype=bool)
        boiler = np.zeros(len(tpos), dtype=bool)  # found, but in more than max_ngram_rows source rows
        src_boiler = self._boilerplate(n)
        pair_q, pair_row = [], []
        cum = np.cumsum(count)
        budget = max(_PAIR_BUDGET, self.max_postings)
        start = 0
        while start < len(tpos):  # blocks of at most `budget` candidate pairs
            done = int(cum[start - 1]) if start else 0
            stop = max(start + 1, int(np.searchsorted(cum, done + budget, side="right")))
            owner, idx = _expand(lo[start:stop], count[start:stop])
            q = owner + start
            spos = src_pos[idx]
            ok = _same_words(self.source_.words, spos, tgt.words, tpos[q], n)
            q, spos = q[ok], spos[ok]
            found[q] = True
            heavy = src_boiler[spos]  # all occurrences of one n-gram agree: it is the same words
            boiler[q[heavy]] = True
            q, spos = q[~heavy], spos[~heavy]
            pair_q.append(q)
            pair_row.append(np.searchsorted(self.source_.starts, spos, side="right") - 1)
            start = stop
        boiler_count = np.bincount(trow[found & boiler], minlength=T).astype(np.int64)
        found &= ~boiler
        shared = np.bincount(trow[found], minlength=T).astype(np.int64)

        q = np.concatenate(pair_q)
        srow = np.concatenate(pair_row)
        if len(q):
            # one vote per (distinct target n-gram, source row), then the row with most votes per target
            R = max(self.n_rows_, 1)
            key = np.unique(q * R + srow)
            key, votes = np.unique(trow[key // R] * R + key % R, return_counts=True)
            t_of, srow = key // R, key % R
            order = np.lexsort((srow, -votes, t_of))  # by target, most votes, lowest row
            t_of, srow = t_of[order], srow[order]
            head = np.ones(len(t_of), dtype=bool)
            head[1:] = t_of[1:] != t_of[:-1]
            best[t_of[head]] = srow[head]

        hits = np.flatnonzero(found)  # ascending: grouped by target, in target order
        for t, p in zip(trow[hits], tpos[hits]):
            lst = strings.setdefault(int(t), [])
            if len(lst) < MAX_SHARED_NGRAMS:
                off = int(p - tgt.starts[t])
                lst.append(" ".join(tgt.tokens[t][off:off + n]))
        return shared, total, best, strings, boiler_count

    def _contained(self, tgt: _Encoded, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) lowest source row holding each target's whole word sequence contiguously, -1 if none."""
        out = np.full(len(rows), -1, dtype=np.int64)
        lengths = tgt.starts[rows + 1] - tgt.starts[rows]
        src = self.source_
        src_codes = self._codes(src.words)
        mask = _mask(self.hash_bits)
        for m in np.unique(lengths):
            sel = np.flatnonzero(lengths == m)
            m = int(m)
            grams = tgt.words[tgt.starts[rows[sel]][:, None] + np.arange(m)]  # (S, m)
            first, inverse = _distinct_rows(grams)
            distinct = grams[first]
            dh = np.zeros(len(distinct), dtype=np.uint64)
            codes = self._codes(distinct)
            with np.errstate(over="ignore"):
                for j in range(m):
                    dh = dh * _BASE + codes[:, j]
            dh &= mask
            order = np.argsort(dh, kind="stable")
            dh_sorted = dh[order]
            # every source window of m words, looked up among the few distinct short targets
            wpos = _windows(src.starts, m)
            wh = _hash_at(src_codes, wpos, m, mask)
            lo = np.searchsorted(dh_sorted, wh, side="left")
            count = np.searchsorted(dh_sorted, wh, side="right") - lo
            hit = count > 0
            owner, idx = _expand(lo[hit], count[hit])
            spos = wpos[hit][owner]  # ascending, so the first verified window per target is its lowest row
            d = order[idx]
            ok = np.ones(len(spos), dtype=bool)
            for j in range(m):
                ok &= src.words[spos + j] == distinct[d, j]
            d, spos = d[ok], spos[ok]
            first_row = np.full(len(distinct), -1, dtype=np.int64)
            if len(d):
                ud, at = np.unique(d, return_index=True)
                first_row[ud] = np.searchsorted(src.starts, spos[at], side="right") - 1
            out[sel] = first_row[inverse]
        return out

    def _compute(self, target_texts: Sequence[str], want_ngrams: bool = True):
        if not hasattr(self, "source_"):
            raise RuntimeError("call fit(source_texts) before matching")
        tgt = self._encode_targets(target_texts)
        exact = self._exact(tgt)
        if not want_ngrams:
            return tgt, exact, None
        n = self.n_for(target_texts) if len(target_texts) else (self.n or self.high)
        shared, total, best, strings, boiler = self._ngrams(tgt, n)
        n_words = np.diff(tgt.starts)
        short = np.flatnonzero((n_words > 0) & (n_words < n))
        if len(short):
            if self.short_rule == "contained":
                row = self._contained(tgt, short)
            else:
                row = exact[short]
            total[short] = 1
            shared[short] = row >= 0
            best[short] = row
            for t in short[row >= 0]:
                strings[int(t)] = [" ".join(tgt.tokens[t])]
        return tgt, exact, (n, shared, total, best, strings, boiler)

    # -- public matching

    def match(self, target_texts: Sequence[str]) -> list[TextMatch]:
        """One TextMatch per target row: exact copy, n-gram overlap, GPT-3's dirty flag."""
        t0 = time.perf_counter()
        tgt, exact, (n, shared, total, best, strings, boiler) = self._compute(target_texts)
        out = []
        for t in range(len(tgt.tokens)):
            is_exact = bool(exact[t] >= 0)
            src = int(exact[t]) if is_exact else (int(best[t]) if best[t] >= 0 else None)
            out.append(TextMatch(
                target_id=t, source_id=src, shared=int(shared[t]), total=int(total[t]),
                overlap=float(shared[t] / total[t]) if total[t] else 0.0, exact=is_exact,
                dirty=is_exact or bool(shared[t] >= 1), n_words=len(tgt.tokens[t]), n=n,
                shared_ngrams=tuple(strings.get(t, ())), boilerplate=int(boiler[t])))
        logger.debug("matched %d targets (n=%d) in %.2fs", len(out), n, time.perf_counter() - t0)
        return out

    def exact_matches(self, target_texts: Sequence[str]) -> list[MethodMatch]:
        """Method "exact": score 1.0 where the normalised target equals a normalised source row."""
        _, exact, _ = self._compute(target_texts, want_ngrams=False)
        return [MethodMatch(t, "exact", 1.0 if e >= 0 else 0.0, bool(e >= 0), int(e) if e >= 0 else None)
                for t, e in enumerate(exact)]

    def ngram_matches(self, target_texts: Sequence[str]) -> list[MethodMatch]:
        """Method f"ngram{n}": score = overlap, dirty = at least one shared n-gram (with the short rule);
        exact copies are not special here (see `exact_matches`)."""
        tgt, _, (n, shared, total, best, _, _) = self._compute(target_texts)
        return [MethodMatch(t, f"ngram{n}", float(shared[t] / total[t]) if total[t] else 0.0, bool(shared[t] >= 1),
                            int(best[t]) if best[t] >= 0 else None) for t in range(len(tgt.tokens))]


def text_overlap(source_texts: Sequence[str], target_texts: Sequence[str], n: int | None = None,
                 **options) -> list[TextMatch]:
    """One TextMatch per target row against `source_texts`; `options` are `TextOverlap`'s."""
    return TextOverlap(n, **options).fit(source_texts).match(target_texts)


def exact_matches(source_texts: Sequence[str], target_texts: Sequence[str], **options) -> list[MethodMatch]:
    """Method "exact" rows (see `TextOverlap.exact_matches`)."""
    return TextOverlap(**options).fit(source_texts).exact_matches(target_texts)


def ngram_matches(source_texts: Sequence[str], target_texts: Sequence[str], n: int | None = None,
                  **options) -> list[MethodMatch]:
    """Method f"ngram{n}" rows (see `TextOverlap.ngram_matches`)."""
    return TextOverlap(n, **options).fit(source_texts).ngram_matches(target_texts)


# ---------------------------------------------------------------------------------------------- calibration

_FILLER = ("the", "a", "very", "not", "film", "movie", "really", "quite", "story", "good", "bad", "and",
           "its", "one", "just", "more", "most", "so", "too", "all")


def perturb_sentence(text: str, k: int, rng: np.random.Generator, vocab: Sequence[str] | None = None) -> str:
    """`text` (whitespace tokens) with k words changed at k distinct positions, each by a random edit:
    substitute (a different word from `vocab`), delete, or insert a `vocab` word before it. Only tokens that
    keep a word after `normalize` are edited, and edits that happen to restore the text are drawn again, so
    the normalised result differs from the original's (at word edit distance <= k). k is clamped to the
    number of such tokens. Deterministic for a seeded `rng`."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    tokens = text.split()
    editable = [i for i, tok in enumerate(tokens) if normalize(tok)]
    k = min(k, len(editable))
    if k == 0:
        return " ".join(tokens)
    words = list(vocab) if vocab else list(_FILLER)

    def other_word(avoid: str | None) -> str:
        for _ in range(16):
            w = words[int(rng.integers(len(words)))]
            if normalize(w) and normalize(w) != (normalize(avoid) if avoid else None):
                return w
        return f"zq{int(rng.integers(10**9))}"  # vocab gave nothing usable: a word no text has

    def edit() -> list[str]:
        edits = dict(zip((int(i) for i in rng.choice(editable, size=k, replace=False)),
                         (int(o) for o in rng.integers(0, 3, size=k))))
        out = []
        for i, tok in enumerate(tokens):
            op = edits.get(i)
            if op is None:
                out.append(tok)
            elif op == 0:  # substitute
                out.append(other_word(tok))
            elif op == 2:  # insert before
                out.extend([other_word(None), tok])
            # op == 1: delete
        return out

    original = normalize(text)
    for _ in range(10):  # edits can undo each other ("x y": delete x, insert x before y): draw again
        out = edit()
        if normalize(" ".join(out)) != original:
            break
    return " ".join(out)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def calibrate_text(source_texts: Sequence[str], n: int, thresholds: Sequence[float] = (0.0, 0.1, 0.25, 0.5),
                   rng: np.random.Generator | None = None, copies: int = 200, k_values: Sequence[int] = (1, 2, 3),
                   *, negative_texts: Sequence[str] | None = None, min_words: int | None = None,
                   strip_punctuation: bool | None = None, short_rule: str = "contained",
                   normalization: str = DEFAULT_NORMALIZATION, strip_markup: bool = False,
                   max_ngram_rows: int | None = None) -> dict:
    """Precision, recall and false-positive rate of "dirty at overlap >= threshold" (0: any shared n-gram,
    GPT-3's rule) on known positives and negatives.

    The distinct (normalised) source rows are shuffled and halved. The first half is the source. Positives:
    `copies` rows of it with at least `min_words` words (default n), each perturbed with k edits for every k in
    `k_values` (`perturb_sentence`, vocabulary = the source half's words): near-copies, never exact ones.
    Negatives: as many rows as there are positives, with at least `min_words` words, drawn from the second
    half (which shares no exact text with the first) or from `negative_texts` when given (rows equal to a
    source row dropped). Honest caveat: a random half of a corpus is not unrelated to the other half. SST-2's
    phrases are nodes of the same parse trees, so a held-out phrase is often a piece of a source phrase, and
    "false positives" among those negatives are often real overlaps: the false-positive rate is then an upper
    bound for unrelated text. Pass `negative_texts` from a set known to be disjoint (e.g. sst2_clean's dev
    sentences) for unrelated negatives. Precision holds at the positives:negatives ratio returned (1:1 unless
    too few negatives); the counts let it be recomputed for another prevalence. Returns numbers only.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    min_words = n if min_words is None else min_words
    options = {"normalization": normalization, "strip_markup": strip_markup, "strip_punctuation": strip_punctuation,
               "short_rule": short_rule, "max_ngram_rows": max_ngram_rows}
    words = TextOverlap(n, **options).fit([]).words_
    k_values = [int(k) for k in k_values]
    seen: set[str] = set()
    rows: list[tuple[str, int]] = []  # (text, words)
    for text in source_texts:
        key = " ".join(words(text))
        if key and key not in seen:
            seen.add(key)
            rows.append((text, key.count(" ") + 1))
    order = rng.permutation(len(rows))
    half = len(rows) // 2
    source = [rows[i][0] for i in order[:half]]
    held = [rows[i] for i in order[half:]]

    pool = [t for t in source if len(words(t)) >= min_words]
    chosen = [pool[i] for i in rng.choice(len(pool), size=min(copies, len(pool)), replace=False)]
    vocab = sorted({w for t in source for w in words(t)})
    positives = [(perturb_sentence(t, k, rng, vocab), k) for k in k_values for t in chosen]

    if negative_texts is not None:
        source_keys = {" ".join(words(t)) for t in source}
        cand = [t for t in negative_texts
                if len(words(t)) >= min_words
                and " ".join(words(t)) not in source_keys]
        negatives_from = "negative_texts (rows equal to a source row dropped)"
    else:
        cand = [t for t, words in held if words >= min_words]
        negatives_from = "held-out half of source_texts (no exact text in common with the source half)"
    negatives = [cand[i] for i in rng.choice(len(cand), size=min(len(positives), len(cand)), replace=False)]

    index = TextOverlap(n, **options).fit(source)
    matches = index.match([t for t, _ in positives] + list(negatives))
    pos_m, neg_m = matches[:len(positives)], matches[len(positives):]

    table = []
    for thr in thresholds:
        hit = [m.dirty_at(thr) for m in pos_m]
        tp, fp = sum(hit), sum(m.dirty_at(thr) for m in neg_m)
        fn, tn = len(pos_m) - tp, len(neg_m) - fp
        by_k = {k: _rate(sum(h for h, (_, kk) in zip(hit, positives) if kk == k), sum(kk == k for _, kk in positives))
                for k in k_values}
        table.append({"threshold": float(thr), "precision": _rate(tp, tp + fp), "recall": _rate(tp, tp + fn),
                      "false_positive_rate": _rate(fp, fp + tn), "recall_by_k": by_k,
                      "tp": tp, "fp": fp, "fn": fn, "tn": tn})
    exact_pos = sum(m.exact for m in pos_m)
    return {"n": int(n), "source_rows": len(source), "positives": len(pos_m), "negatives": len(neg_m),
            "copies": len(chosen), "k_values": k_values, "min_words": int(min_words),
            "positives_exact": exact_pos, "negatives_from": negatives_from,
            "mean_overlap_positives": float(np.mean([m.overlap for m in pos_m])) if pos_m else None,
            "mean_overlap_negatives": float(np.mean([m.overlap for m in neg_m])) if neg_m else None,
            "by_threshold": table}
