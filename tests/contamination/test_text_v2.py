"""Text contamination on real corpora: separators as word boundaries, HTML entities and markup, boilerplate
n-grams, and near-copies of edited texts by MinHash (datasketch) with a data-calibrated Jaccard threshold."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import shared_data
from tests.contamination.test_check_cli import run
from transferlab.contamination.inputs import read_split
from transferlab.contamination.text_near import (
    MinHashIndex,
    calibrate_minhash,
    jaccard_threshold,
    minhash_null,
)
from transferlab.contamination.text_overlap import (
    TextOverlap,
    has_markup,
    normalize_words,
    perturb_sentence,
    tokenizer,
)


# ---------------------------------------------------------------------------------------------- normalisation

@pytest.mark.parametrize("text, words", [
    ("Islamic\\militants killed", ["islamic", "militants", "killed"]),  # a backslash line break
    ("first line\\\\second line", ["first", "line", "second", "line"]),
    ("cats and/or dogs", ["cats", "and", "or", "dogs"]),
    ("a well-made film\u2014truly", ["a", "well", "made", "film", "truly"]),
    ("don't stop, it's Rock'n'Roll", ["don't", "stop", "it's", "rock'n'roll"]),  # apostrophes inside words stay
    ("don\u2019t", ["don't"]),  # a typographic apostrophe is the same word
    ("'quoted' dogs' bowl", ["quoted", "dogs", "bowl"]),  # apostrophes at the edges are separators
    ("it 's", ["it", "s"]),  # SST-2's tokenised clitic
    ("fish &amp; chips", ["fish", "chips"]),
    ("&amp;lt;BR&amp;gt;next", ["br", "next"]),  # double escape, unescaped until stable; the tag kept as a word
    ("3.5 stars ($5)", ["3", "5", "stars", "5"]),
    ("soft\u00adhyphen", ["softhyphen"]),  # a format character joins, as in GPT-3's
    ("हिन्दी सिनेमा", ["हिन्दी", "सिनेमा"]),
    ("", []),
])
def test_normalize_words_cases(text, words):
    assert normalize_words(text) == words


@pytest.mark.parametrize("text, words", [
    ("<p class=x>Hello</p><br>world", ["hello", "world"]),
    ("&lt;b&gt;bold&lt;/b&gt; move", ["bold", "move"]),
    ("&amp;lt;br/&amp;gt;next", ["next"]),  # double-escaped self-closing tag
    ("a<br/>b <!-- note --> c", ["a", "b", "c"]),
    ("5 < 6 and <3", ["5", "6", "and", "3"]),  # no letter after '<': text, not a tag
])
def test_strip_markup_cases(text, words):
    assert normalize_words(text, strip_markup=True) == words


def test_markup_detection_and_the_older_normalisations():
    assert has_markup(["plain", "a &lt;b&gt;bold&lt;/b&gt; word", "x<br>y"])
    assert not has_markup(["plain text", "5 < 6", "i <3 it", "one <b> only"])  # one row is not a corpus's markup
    assert tokenizer("gpt3")("Islamic\\militants don't") == ["islamicmilitants", "dont"]  # GPT-3's, kept
    assert tokenizer("whitespace")("A-b C") == ["a-b", "c"]
    assert tokenizer("gpt3", strip_markup=True)("x<br>y") == ["x", "y"]
    with pytest.raises(ValueError):
        tokenizer("nfkc")


# ---------------------------------------------------------------------------------------------- boilerplate

def _random_rows(rng, rows, lo=10, hi=14, vocab=5000, tag="v"):
    return [" ".join(f"{tag}{int(w)}" for w in rng.integers(vocab, size=int(rng.integers(lo, hi + 1))))
            for _ in range(rows)]


def test_boilerplate_ngrams_do_not_make_a_row_dirty_alone():
    rng = np.random.default_rng(0)
    phrase = "this film is one of the best of the"  # 9 words: two 8-grams, in every source row
    source = [f"{phrase} {row}" for row in _random_rows(rng, 100)]
    unique = source[7].split()[-10:]  # 10 words only row 7 holds
    target = [f"{phrase} " + _random_rows(rng, 1)[0],  # boilerplate only
              f"{phrase} {' '.join(unique)}",  # boilerplate and a real overlap
              _random_rows(rng, 1)[0]]
    plain = TextOverlap(8).fit(source).match(target)
    assert [m.dirty for m in plain] == [True, True, False] and plain[0].boilerplate == 0
    index = TextOverlap(8, max_ngram_rows=50).fit(source)
    m = index.match(target)
    assert [x.dirty for x in m] == [False, True, False]
    assert (m[0].shared, m[0].boilerplate) == (0, 2) and m[0].source_id is None and m[0].shared_ngrams == ()
    assert (m[1].shared, m[1].boilerplate, m[1].source_id) == (3, 2, 7)  # the boilerplate does not vote
    assert index.boilerplate_ngrams(8) == 2
    assert TextOverlap(8, max_ngram_rows=100).fit(source).match(target)[0].dirty  # in 100 rows, not more
    with pytest.raises(ValueError):
        TextOverlap(8, max_ngram_rows=0).fit(source)


# ---------------------------------------------------------------------------------------------- planted corpus

def _sst2_rows(data: str, split: str, min_words: int) -> list[str]:
    rows = read_split(shared_data(data), split).texts
    return [t for t in dict.fromkeys(rows) if len(t.split()) >= min_words]


def test_planted_overlaps_across_backslashes_and_escaped_markup_are_all_found():
    """200 SST-2 training rows joined in pairs by backslash line breaks, some words wrapped in escaped <b>
    tags: a scraped dump. 20 target rows are clean text crossing a join (4 words before it, 5 after, the
    wrapped word among them) among 60 unrelated test rows: every planted row is found, no other."""
    rng = np.random.default_rng(0)
    train = _sst2_rows("sst2_clean", "train", 12)
    pick = rng.choice(len(train), size=200, replace=False)
    rows = [train[i].split() for i in pick]
    source, planted = [], []
    for i in range(0, 200, 2):
        a, b = rows[i], list(rows[i + 1])
        clean_target = " ".join(a[-4:] + b[:5])
        b[1] = f"&lt;b&gt;{b[1]}&lt;/b&gt;"  # escaped markup glued to its word
        sep = "\\" if i % 4 else "\\\\"
        source.append(" ".join(a) + sep + " ".join(b))
        if len(planted) < 20:
            planted.append(clean_target)
    others = _sst2_rows("sst2_clean", "test", 9)[:60]
    target = planted + others
    assert has_markup(source) and not has_markup(target)
    found = TextOverlap(8, strip_markup=has_markup(source)).fit(source).match(target)
    assert [m.dirty for m in found] == [True] * 20 + [False] * 60
    assert [m.source_id for m in found[:20]] == list(range(20))
    # GPT-3's normalisation glues the words around each separator and tag: it loses the planted rows
    old = TextOverlap(8, normalization="gpt3").fit(source).match(target)
    assert sum(m.dirty for m in old[:20]) == 0


# ---------------------------------------------------------------------------------------------- minhash

def test_minhash_finds_edited_sst2_sentences_and_not_unrelated_ones():
    words = tokenizer()
    rng = np.random.default_rng(1)
    train = _sst2_rows("sst2_clean", "train", 10)
    source = [train[i] for i in rng.choice(len(train), size=3000, replace=False)]
    index = MinHashIndex().fit([words(t) for t in source])
    vocab = sorted({w for t in source for w in words(t)})
    originals = [source[i] for i in rng.choice(len(source), size=30, replace=False)]
    copies = [perturb_sentence(t, k, rng, vocab) for k in (1, 2, 3) for t in originals]
    rows, score = index.best([words(t) for t in copies])
    assert (score >= 0.5).mean() >= 0.9
    assert (score[:30] >= 0.5).all()  # every single edit
    unrelated = _sst2_rows("sst2_clean", "test", 8)[:300]
    _, other = index.best([words(t) for t in unrelated])
    assert (other >= 0.5).mean() <= 0.02
    # the exact Jaccard decides, not the MinHash estimate: a copy's score is the sets' true Jaccard
    a, b = set(words(copies[0])), set(words(source[int(rows[0])]))
    assert score[0] == pytest.approx(len(a & b) / len(a | b))


def test_jaccard_threshold_holds_the_stated_rate_on_a_continuous_null():
    rng = np.random.default_rng(0)
    null = rng.beta(2, 8, size=20000)
    for fpr in (0.01, 0.001):
        choice = jaccard_threshold(null, fpr, floor=0.0)
        assert choice.null_rate <= fpr and choice.null_rate_upper95 >= choice.null_rate
        fresh = rng.beta(2, 8, size=400000)
        rate = (fresh >= choice.threshold).mean()
        # Monte Carlo error: the order statistic (sqrt(fpr / N) relative) and the fresh sample's
        sigma = np.sqrt(fpr * (1 - fpr) / 20000) + np.sqrt(fpr / 400000)
        assert abs(rate - fpr) <= 4 * sigma, (fpr, rate)
    few = jaccard_threshold(null[:500], 0.001, floor=0.0)  # fewer than 1 / fpr null scores: beyond them all
    assert few.threshold > null[:500].max() and few.null_rate == 0 and few.warning
    assert jaccard_threshold(np.ones(100), 0.01).disabled


def test_minhash_null_calibrates_the_rate_on_fresh_texts():
    """Rows of random words from a small vocabulary (Jaccards spread over 0..0.6): the leave-one-out null of
    the source predicts the rate at which fresh rows of the same kind are flagged."""
    rng = np.random.default_rng(2)
    source = [r.split() for r in _random_rows(rng, 2000, 8, 12, vocab=40)]
    index = MinHashIndex(candidate_jaccard=0.2).fit(source)
    null = minhash_null(index, n=8, n_null=2000)
    choice = jaccard_threshold(null, 0.05, floor=0.2)
    fresh = [r.split() for r in _random_rows(rng, 4000, 8, 12, vocab=40)]
    _, score = index.best(fresh)
    rate = (score >= choice.threshold - 1e-9).mean()
    # scores are ratios of small integers: ties at the threshold keep the rate at or under fpr
    assert choice.null_rate <= 0.05 and rate <= 0.05 + 3 * np.sqrt(0.05 / 2000) and rate >= 0.01


def test_calibrate_minhash_reports_recall_by_edits():
    rng = np.random.default_rng(3)
    texts = _random_rows(rng, 400, 12, 16)
    words = tokenizer()
    index = MinHashIndex().fit([words(t) for t in texts])
    rec = calibrate_minhash(index, texts, words, 0.5, copies=50, rng=rng)
    assert rec["positives"] == 150 and rec["recall_by_k"][1] == 1.0 and rec["recall"] >= 0.95
    assert json.loads(json.dumps(rec))["unscored"] == 0


# ---------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def markup_texts(tmp_path):
    rng = np.random.default_rng(4)
    rows = _random_rows(rng, 60, 12, 14, vocab=3000, tag="w")
    source = list(rows)
    source[3] = source[3].replace(" ", "\\", 1)  # a backslash line break after the first word
    source[5] = "&lt;p&gt;" + source[5] + "&lt;/p&gt;"
    source[6] = "<br>" + source[6]
    words5 = rows[5].split()
    words5[4] = "zzedit"  # one substituted word
    target = [rows[3],  # source row 3 without its backslash: exact after normalisation
              rows[5],  # source row 5 without its markup: exact with markup stripped
              " ".join(words5)] + _random_rows(rng, 3, 12, 14, vocab=3000, tag="u")
    (tmp_path / "src").mkdir()
    (tmp_path / "tgt").mkdir()
    (tmp_path / "src" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in source))
    (tmp_path / "tgt" / "test.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t0\n" for t in target))
    return tmp_path / "src", tmp_path / "tgt"


def test_cli_text_end_to_end_with_markup_boilerplate_and_minhash(capsys, tmp_path, markup_texts):
    src, tgt = markup_texts
    out = tmp_path / "out"
    code, printed, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out),
                             "--methods", "exact,ngram,minhash", "--strip-markup", "--calibrate", "20")
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["normalization"] == {"mode": "words", "strip_markup": True, "strip_markup_why": "--strip-markup"}
    assert s["options"]["normalization"] == "words" and s["options"]["max_ngram_rows"] == 50
    assert s["boilerplate"] == {"max_ngram_rows": 50, "source_ngrams": 0, "target_rows": 0, "target_ngrams": 0}
    mh = s["methods"]["minhash"]
    assert mh["chosen"].startswith("data-calibrated at fpr 0.001") and 0.3 <= mh["threshold"] < 1
    assert mh["copy_recall"] == 1.0 and set(mh["copy_recall_by_k"]) == {"1", "2", "3"}
    assert s["calibration"]["minhash"]["positives"] == 60
    assert s["methods"]["exact"]["n_dirty"] == 2 and s["methods"]["minhash"]["n_dirty"] == 3
    assert s["n_dirty"] == 3  # the three planted rows, not the three unrelated ones
    assert "normalisation: words; markup tags stripped (--strip-markup)" in printed
    page = (out / "contamination.html").read_text(encoding="utf-8")
    assert "minhash recall of edited copies" in page
    # without the option, markup in the source turns it on, and says so
    out2 = tmp_path / "out2"
    code, printed, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out",
                             str(out2), "--calibrate", "0")
    assert code == 0, err
    s2 = json.loads((out2 / "summary.json").read_text(encoding="utf-8"))
    assert s2["normalization"]["strip_markup"] and s2["normalization"]["strip_markup_why"] == \
        "markup detected in the source"
    assert s2["methods"]["exact"]["n_dirty"] == 2 and "minhash" not in s2["methods"]
    # and GPT-3's normalisation without markup stripping loses both
    out3 = tmp_path / "out3"
    code, _, err = run(capsys, "contamination", "--source", str(src), "--target", str(tgt), "--out", str(out3),
                       "--calibrate", "0", "--normalization", "gpt3", "--no-strip-markup", "--max-ngram-rows", "0")
    assert code == 0, err
    s3 = json.loads((out3 / "summary.json").read_text(encoding="utf-8"))
    assert s3["methods"]["exact"]["n_dirty"] == 0 and s3["boilerplate"]["max_ngram_rows"] is None
