"""Word n-gram overlap (GPT-3, Brown et al. 2020, Appendix C): hand-made cases, a brute-force reference,
hash collisions, the short-example rule, calibration, and the SST-2 data README's measured overlap."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from tests.conftest import shared_data
from transferlab.contamination.text_overlap import (
    MAX_SHARED_NGRAMS,
    TextOverlap,
    calibrate_text,
    choose_n,
    exact_matches,
    ngram_matches,
    normalize,
    perturb_sentence,
    text_overlap,
)


def _words(i0: int, k: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(i0, i0 + k))


def _random_corpus(rng, rows, vocab, lo, hi):
    return [" ".join(f"v{int(w)}" for w in rng.integers(vocab, size=int(rng.integers(lo, hi + 1))))
            for _ in range(rows)]


def _reference(source, target, n, short_rule="contained"):
    """Brute force with Python sets: (shared, total, source_id, exact, dirty) per target."""
    src = [tuple(normalize(s)) for s in source]
    src_grams = [{g[i:i + n] for i in range(len(g) - n + 1)} for g in src]
    exact_of = {}
    for r, g in enumerate(src):
        if g:
            exact_of.setdefault(g, r)
    out = []
    for t in target:
        g = tuple(normalize(t))
        exact = exact_of.get(g) if g else None
        if len(g) >= n:
            grams = {g[i:i + n] for i in range(len(g) - n + 1)}
            votes = [len(grams & sg) for sg in src_grams]
            shared = len(set().union(*[grams & sg for sg in src_grams]) if src_grams else set())
            best = max(range(len(src)), key=lambda r: (votes[r], -r)) if any(votes) else None
            total = len(grams)
        elif g:
            total = 1
            if short_rule == "contained":
                rows = [r for r, s in enumerate(src)
                        if any(s[i:i + len(g)] == g for i in range(len(s) - len(g) + 1))]
                best = rows[0] if rows else None
            else:
                best = exact
            shared = int(best is not None)
        else:
            shared, total, best = 0, 0, None
        src_id = exact if exact is not None else best
        out.append((shared, total, src_id, exact is not None, exact is not None or shared >= 1))
    return out


# ---------------------------------------------------------------------------------------------- normalisation

@pytest.mark.parametrize("text, words", [
    ("Don't STOP!", ["dont", "stop"]),
    ("a well-made film", ["a", "wellmade", "film"]),
    ("it 's a charming , often affecting journey .", ["it", "s", "a", "charming", "often", "affecting", "journey"]),
    ("snake_case and 3.5 stars ($5)", ["snakecase", "and", "35", "stars", "5"]),
    ("Cafe\u0301 == Café", ["café", "café"]),  # decomposed and composed accents agree (NFKC)
    ("ＡＢＣ ﬁne", ["abc", "fine"]),  # full-width letters, ligature
    ("हिन्दी सिनेमा", ["हिन्दी", "सिनेमा"]),  # combining vowel signs are kept (regex \w would cut them)
    ("x\u00a0y\tz\nw", ["x", "y", "z", "w"]),  # Unicode whitespace splits
    ("soft\u00adhyphen 👍 -- ...", ["softhyphen"]),  # format char, emoji and punctuation-only tokens vanish
    ("", []),
])
def test_normalize_cases(text, words):
    assert normalize(text) == words


def test_normalize_without_punctuation_stripping_is_lower_split():
    text = "Don't STOP , well-made ."
    assert normalize(text, strip_punctuation=False) == ["don't", "stop", ",", "well-made", "."]
    assert normalize(text, strip_punctuation=False) == text.lower().split()


# ---------------------------------------------------------------------------------------------- choose_n

def test_choose_n_percentile_and_clamping():
    texts = [_words(0, k) for k in range(1, 101)]  # lengths 1..100: sorted index floor(0.05 * 99) = 4 -> 5
    assert choose_n(texts, low=1, high=100) == 5
    assert choose_n(texts) == 8  # clamped up to GPT-3's minimum
    assert choose_n([_words(0, k) for k in range(30, 130)]) == 13  # 5th percentile 34, clamped down
    texts = [_words(0, 9)] + [_words(0, 10)] * 19  # 20 lengths: sorted index 0 -> 9
    assert choose_n(texts) == 9
    texts = [_words(0, 3)] * 2 + [_words(0, 11)] * 38  # 40 lengths: index floor(1.95) = 1 -> 3 words
    assert choose_n(texts, low=1) == 3
    assert choose_n(["a b c, d e f g h i j k l"] * 3) == 12  # counts words after punctuation stripping
    assert choose_n(["a b c , d e f g h i j k l"] * 3, strip_punctuation=False) == 13


def test_choose_n_leaves_fewer_than_5_percent_shorter():
    rng = np.random.default_rng(3)
    for _ in range(20):
        lengths = rng.integers(1, 40, size=int(rng.integers(1, 300)))
        n = choose_n([_words(0, int(k)) for k in lengths], low=1, high=1000)
        assert (lengths < n).mean() < 0.05


def test_choose_n_rejects_bad_arguments():
    with pytest.raises(ValueError):
        choose_n([])
    with pytest.raises(ValueError):
        choose_n(["a"], low=9, high=8)


# ---------------------------------------------------------------------------------------------- matching

def test_hand_made_pair_with_known_ngrams():
    source = ["the cat sat on the mat", "a dog ran in the park", "the cat sat still"]
    target = ["look the cat sat on the rug", "a dog ran in the yard today", "nothing in common here"]
    m = text_overlap(source, target, n=3)
    # target 0's 3-grams: look-the-cat, the-cat-sat, cat-sat-on, sat-on-the, on-the-rug; 3 occur in row 0,
    # 1 (the cat sat) also in row 2
    assert (m[0].shared, m[0].total, m[0].source_id) == (3, 5, 0)
    assert m[0].shared_ngrams == ("the cat sat", "cat sat on", "sat on the")
    assert m[0].overlap == pytest.approx(3 / 5) and m[0].dirty and not m[0].exact
    assert (m[1].shared, m[1].total, m[1].source_id) == (3, 5, 1)
    assert m[1].shared_ngrams == ("a dog ran", "dog ran in", "ran in the")
    assert (m[2].shared, m[2].total, m[2].source_id, m[2].dirty) == (0, 2, None, False)
    assert [x.target_id for x in m] == [0, 1, 2] and {x.n for x in m} == {3}
    assert [x.n_words for x in m] == [7, 7, 4]


def test_exact_matches_after_normalisation():
    source = ["Hello, World!", "other text here", "hello world", "..."]
    target = ["hello   WORLD", "other text", "?!", "Other text here."]
    rows = exact_matches(source, target)
    assert [(r.method, r.score, r.dirty, r.source_id) for r in rows] == [
        ("exact", 1.0, True, 0), ("exact", 0.0, False, None), ("exact", 0.0, False, None),
        ("exact", 1.0, True, 1)]  # first of duplicate rows; an empty target matches nothing
    m = text_overlap(source, target, n=8)
    assert [x.exact for x in m] == [True, False, False, True]
    assert m[0].source_id == 0 and m[0].dirty


def test_one_shared_ngram_makes_a_long_example_dirty():
    source = [_words(0, 40, "s"), "x1 x2 x3 x4 x5 x6 x7 x8 filler"]
    target = [_words(100, 12, "t") + " x1 x2 x3 x4 x5 x6 x7 x8 " + _words(200, 10, "u")]
    (m,) = text_overlap(source, target, n=8)
    assert m.total == 30 - 8 + 1 and m.shared == 1 and m.dirty and m.source_id == 1
    assert m.shared_ngrams == ("x1 x2 x3 x4 x5 x6 x7 x8",)
    assert m.overlap == pytest.approx(1 / 23)
    assert m.dirty_at(0.0) and not m.dirty_at(0.05)
    (row,) = ngram_matches(source, target, n=8)
    assert (row.method, row.dirty, row.source_id) == ("ngram8", True, 1) and row.score == pytest.approx(1 / 23)


def test_short_example_rule():
    source = ["a truly great film of the year", "bad", "dull and long"]
    target = ["great film", "film great", "bad", "dull and long", "a truly great film of the year",
              "unseen words", "Bad!"]
    contained = text_overlap(source, target, n=8)
    assert [m.dirty for m in contained] == [True, False, True, True, True, False, True]
    assert [m.source_id for m in contained] == [0, None, 1, 2, 0, None, 1]
    assert all(m.total == 1 for m in contained)  # the whole short example is its one gram
    assert contained[0].shared_ngrams == ("great film",) and contained[0].overlap == 1.0
    exact = text_overlap(source, target, n=8, short_rule="exact")
    assert [m.dirty for m in exact] == [False, False, True, True, True, False, True]
    assert exact[0].shared == 0 and exact[0].source_id is None
    # the n-gram method alone: a contained short target counts as shared, an exact one too
    rows = ngram_matches(source, target, n=8)
    assert [r.dirty for r in rows] == [m.dirty for m in contained]


def test_best_source_is_the_row_with_most_shared_ngrams():
    g = [f"g{i}" for i in range(10)]
    target = [" ".join(g)]  # 3-grams g0g1g2 .. g7g8g9: 8 of them
    source = [" ".join(g[0:3]) + " zz",  # 1 shared 3-gram
              "qq " + " ".join(g[2:7]),  # 3 shared
              " ".join(g[5:10]),  # 3 shared (a tie with row 1: the lower row wins)
              " ".join(g[0:3] + ["yy"] + g[3:6])]  # 2 shared, one of them also in row 0
    (m,) = text_overlap(source, target, n=3)
    assert m.source_id == 1 and m.shared == 7 and m.total == 8  # g1g2g3 is shared nowhere
    (m,) = text_overlap(source + [" ".join(g[1:7])], target, n=3)  # 4 shared
    assert m.source_id == 4


def test_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    source = _random_corpus(rng, 300, 12, 1, 14)  # a small vocabulary: many shared 3-grams, many ties
    target = _random_corpus(rng, 200, 12, 0, 14) + source[:20]
    for n, rule in [(3, "contained"), (4, "exact"), (1, "contained")]:
        got = [(m.shared, m.total, m.source_id, m.exact, m.dirty) for m in text_overlap(source, target, n=n,
                                                                                          short_rule=rule)]
        assert got == _reference(source, target, n, rule)


def test_hash_collisions_are_verified_away():
    rng = np.random.default_rng(1)
    source = _random_corpus(rng, 200, 30, 1, 12)
    target = _random_corpus(rng, 150, 30, 0, 12)
    want = [asdict(m) for m in TextOverlap(4).fit(source).match(target)]
    for bits in (1, 3, 8):  # 2, 8, 256 hash values for thousands of distinct 4-grams: collisions everywhere
        assert [asdict(m) for m in TextOverlap(4, hash_bits=bits).fit(source).match(target)] == want
    assert any(m["shared"] for m in want) and not all(m["dirty"] for m in want)


def test_max_postings_caps_the_vote_not_the_count():
    source = ["a b c d x"] * 3 + ["y a b c d e"]  # "a b c", "b c d" in rows 0-3, "c d e" only in row 3
    target = ["a b c d e f"]
    (full,) = TextOverlap(3).fit(source).match(target)
    assert (full.source_id, full.shared, full.total) == (3, 3, 4)
    (capped,) = TextOverlap(3, max_postings=1).fit(source).match(target)
    # each n-gram votes for its first occurrence only: row 0 gets two votes, row 3 one; all three still count
    assert (capped.source_id, capped.shared, capped.total) == (0, 3, 4)
    (capped,) = TextOverlap(3, max_postings=1).fit(["a b c x"] * 3 + ["a b c d"]).match(["a b c d"])
    assert capped.exact and capped.source_id == 3  # an exact copy wins over the vote


def test_n_none_is_chosen_from_the_targets_and_limits():
    source = [_words(0, 30)]
    targets = [_words(0, 20)] * 19 + [_words(0, 9)]
    index = TextOverlap().fit(source)
    assert index.n_for(targets) == 9 and {m.n for m in index.match(targets)} == {9}
    m = index.match([_words(0, 25)] * 30)
    assert m[0].n == 13 and m[0].total == 13 and m[0].shared == 13  # clamped to 13
    long = text_overlap([_words(0, 200)], [_words(0, 100)], n=5)[0]
    assert long.shared == 96 and len(long.shared_ngrams) == MAX_SHARED_NGRAMS


def test_empty_inputs_and_bad_parameters():
    assert text_overlap([], ["a b c"], n=2)[0].dirty is False
    assert text_overlap(["a b"], [], n=2) == []
    (m,) = text_overlap(["", "...", "a b"], ["!!"], n=2)
    assert (m.total, m.shared, m.dirty, m.exact, m.source_id) == (0, 0, False, False, None)
    with pytest.raises(RuntimeError):
        TextOverlap(3).match(["a"])
    for bad in [{"n": 0}, {"short_rule": "ignore"}, {"max_postings": 0}, {"hash_bits": 65},
                {"low": 9, "high": 8}]:
        with pytest.raises(ValueError):
            TextOverlap(**bad).fit(["a"])


def test_results_are_json_data():
    m = text_overlap(["a b c d"], ["a b c d e"], n=3)
    assert json.loads(json.dumps([asdict(x) for x in m]))[0]["shared_ngrams"] == ["a b c", "b c d"]


# ---------------------------------------------------------------------------------------------- calibration

def _word_edit_distance(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def test_perturb_sentence_changes_k_words_deterministically():
    text = "it 's a charming and often affecting journey ."
    assert perturb_sentence(text, 2, np.random.default_rng(5)) == perturb_sentence(text, 2, np.random.default_rng(5))
    assert perturb_sentence(text, 0, np.random.default_rng(0)) == text
    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        for _ in range(50):
            out = perturb_sentence(text, k, rng, vocab=["film", "movie", "very"])
            assert out != text and 1 <= _word_edit_distance(normalize(text), normalize(out)) <= k
    assert normalize(perturb_sentence("one", 5, rng, vocab=["one"])) != ["one"]  # clamped to 1 edit, still a change
    with pytest.raises(ValueError):
        perturb_sentence(text, -1, rng)


def _synthetic(rng, rows, boilerplate=""):
    return [(boilerplate + " " if boilerplate else "") + " ".join(f"v{int(w)}" for w in rng.integers(5000, size=25))
            for _ in range(rows)]


def test_calibration_recall_one_for_single_edits_of_long_sentences():
    # 25 random words from 5,000: unrelated rows share no 8-gram. A single edit leaves an intact 8-gram in any
    # sentence of 2n + 1 = 17 or more words, so every k=1 copy must be caught.
    corpus = _synthetic(np.random.default_rng(0), 800)
    cal = calibrate_text(corpus, 8, (0.0, 0.5), np.random.default_rng(1), copies=100)
    assert cal["positives"] == 300 and cal["negatives"] == 300 and cal["positives_exact"] == 0
    at0, at5 = cal["by_threshold"]
    assert at0["recall_by_k"][1] == 1.0
    assert at0["precision"] == 1.0 and at0["false_positive_rate"] == 0.0  # unrelated negatives: no false positive
    # one edit destroys at most 8 of a copy's 17..19 8-grams (overlap > 0.5); three edits can destroy most
    assert at5["recall_by_k"][1] == 1.0 and at5["recall_by_k"][3] < 1.0
    assert json.loads(json.dumps(cal))["n"] == 8


def test_calibration_precision_drops_when_negatives_share_ngrams():
    # every row starts with the same 9-word phrase: each held-out negative shares two 8-grams with the source
    corpus = _synthetic(np.random.default_rng(0), 800, boilerplate="this film is one of the best of the")
    cal = calibrate_text(corpus, 8, (0.0, 0.3), np.random.default_rng(1), copies=100)
    at0, at3 = cal["by_threshold"]
    assert at0["false_positive_rate"] == 1.0 and at0["precision"] < 1.0
    assert at0["precision"] == pytest.approx(at0["tp"] / (at0["tp"] + at0["fp"]))
    # 2 of a negative's 27 8-grams are shared (0.07); a k=1 copy keeps most of its own: a threshold separates them
    assert at3["false_positive_rate"] == 0.0 and at3["precision"] == 1.0 and at3["recall_by_k"][1] == 1.0


def test_calibration_with_given_negatives():
    rng = np.random.default_rng(0)
    corpus, others = _synthetic(rng, 200), _synthetic(rng, 50)
    cal = calibrate_text(corpus, 8, (0.0,), np.random.default_rng(2), copies=20, k_values=(1,),
                         negative_texts=others + corpus[:5])  # rows of the source half are dropped
    assert cal["negatives"] == 20 and cal["negatives_from"].startswith("negative_texts")
    assert cal["by_threshold"][0]["fp"] == 0


# ---------------------------------------------------------------------------------------------- real data

def _read_tsv(path):
    lines = path.read_text(encoding="utf-8").split("\n")
    return [line.rsplit("\t", 1)[0] for line in lines[1:] if line]


def test_reproduces_the_sst2_readme_overlap():
    """README: word 8-grams, lower-cased, whitespace split: 3,048 of the 3,128 dev phrases of 8+ words share
    an 8-gram with train.tsv; test 3 of 807; sst2_clean's dev 3 of 785."""
    sst2, clean = shared_data("sst2"), shared_data("sst2_clean")
    index = TextOverlap(8, strip_punctuation=False).fit(_read_tsv(sst2 / "train.tsv"))
    for rows, want in [(_read_tsv(sst2 / "dev.tsv"), (3048, 3128)), (_read_tsv(sst2 / "test.tsv"), (3, 807))]:
        long = [m for m in index.match(rows) if m.n_words >= 8]
        assert (sum(m.dirty for m in long), len(long)) == want
    long = [m for m in TextOverlap(8, strip_punctuation=False).fit(_read_tsv(clean / "train.tsv")).match(
        _read_tsv(clean / "dev.tsv")) if m.n_words >= 8]
    assert (sum(m.dirty for m in long), len(long)) == (3, 785)
