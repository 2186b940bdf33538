"""Text contamination on SST-2 (docs/contamination.md, "Text normalisation, boilerplate and near-copies").

1. Planted overlaps in a scraped-looking corpus: `--planted-rows` sst2_clean training rows (12+ words) joined in
   pairs by backslash line breaks (one or two backslashes), the second row's second word wrapped in escaped
   bold tags (`&lt;b&gt;word&lt;/b&gt;`); each pair gives one planted target row, in clean text, crossing the
   join (4 words before it, 5 after). Targets: the planted rows and as many sst2_clean test rows (9+ words).
   Recall of the planted rows and false positives among the others, per normalisation.
2. GPT-3's n-gram check on SST-2 and sst2_clean (dev and test against train), per normalisation, with and
   without boilerplate (--max-ngram-rows 50): dirty rows, and the n-grams set aside.
3. MinHash near-copies on sst2_clean: the Jaccard threshold from the source's own null (`text_near.minhash_null`)
   at several false-positive rates; recall of edited copies (1, 2, 3 words) of training rows; the rate at which
   sst2_clean's dev and test rows (sentences not in its training set) are flagged: the real false-positive rate.
   Also shingles of 1, 2 and 3 words.

    TRANSFERLAB_DATA=../shared/data .venv/bin/python benchmarks/contamination_text.py [--out text.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _data import dataset
from transferlab.contamination.inputs import read_split
from transferlab.contamination.text_near import (
    MinHashIndex,
    calibrate_minhash,
    jaccard_threshold,
    minhash_null,
)
from transferlab.contamination.text_overlap import TextOverlap, has_markup, tokenizer


def planted(rows_n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    train = [t for t in dict.fromkeys(read_split(dataset("sst2_clean"), "train").texts) if len(t.split()) >= 12]
    rows = [train[i].split() for i in rng.choice(len(train), size=rows_n, replace=False)]
    source, plants = [], []
    for i in range(0, rows_n - 1, 2):
        a, b = rows[i], list(rows[i + 1])
        plants.append(" ".join(a[-4:] + b[:5]))
        b[1] = f"&lt;b&gt;{b[1]}&lt;/b&gt;"
        source.append(" ".join(a) + ("\\" if i % 4 else "\\\\") + " ".join(b))
    others = [t for t in dict.fromkeys(read_split(dataset("sst2_clean"), "test").texts) if len(t.split()) >= 9]
    others = others[:len(plants)]
    out = {"source_rows": len(source), "planted": len(plants), "others": len(others), "markup_detected":
           has_markup(source)}
    for norm, strip in (("words", True), ("words", False), ("gpt3", False)):
        m = TextOverlap(8, normalization=norm, strip_markup=strip).fit(source).match(plants + others)
        hit = [x.dirty for x in m]
        out[f"{norm}{' + strip markup' if strip else ''}"] = {
            "recall": sum(hit[:len(plants)]) / len(plants),
            "false_positives": sum(hit[len(plants):])}
    return out


def ngram_counts() -> list[dict]:
    table = []
    for data in ("sst2", "sst2_clean"):
        src = read_split(dataset(data), "train").texts
        for norm in ("gpt3", "words"):
            for max_rows in (None, 50, 10):
                index = TextOverlap(None, normalization=norm, max_ngram_rows=max_rows).fit(src)
                for split, name in (("val", "dev"), ("test", "test")):
                    tgt = read_split(dataset(data), split).texts
                    m = index.match(tgt)
                    n = m[0].n
                    table.append({"data": data, "target": name, "normalization": norm, "max_ngram_rows": max_rows,
                                  "n": n, "examples": len(m), "dirty": sum(x.dirty for x in m),
                                  "exact": sum(x.exact for x in m), "long": sum(x.n_words >= n for x in m),
                                  "long_dirty": sum(x.dirty for x in m if x.n_words >= n),
                                  "boilerplate_source_ngrams": index.boilerplate_ngrams(n),
                                  "rows_with_boilerplate": sum(x.boilerplate > 0 for x in m)})
                    print(table[-1], flush=True)
    return table


def minhash(fprs: list[float], copies: int, seed: int) -> list[dict]:
    words = tokenizer()
    src = read_split(dataset("sst2_clean"), "train").texts
    clean = read_split(dataset("sst2_clean"), "val").texts + read_split(dataset("sst2_clean"), "test").texts
    clean_words = [words(t) for t in clean]
    long = np.array([len(w) >= 8 for w in clean_words])
    table = []
    for shingle in (1, 2, 3):
        t0 = time.perf_counter()
        index = MinHashIndex(shingle=shingle).fit([words(t) for t in src])
        null = minhash_null(index, n=8, n_null=5000, seed=seed)
        seconds = time.perf_counter() - t0
        _, score = index.best(clean_words)
        for fpr in fprs if shingle == 1 else fprs[:1] + fprs[2:3]:
            choice = jaccard_threshold(null, fpr)
            rec = calibrate_minhash(index, src, words, choice.threshold, copies=copies,
                                    rng=np.random.default_rng(seed))
            flagged = score >= choice.threshold - 1e-9
            table.append({"shingle": shingle, "fpr": fpr, "threshold": choice.threshold,
                          "null_rate": choice.null_rate, "recall": rec["recall"], "recall_by_k": rec["recall_by_k"],
                          "recall_all": rec["recall_all"], "unscored": rec["unscored"],
                          "clean_flagged": int(flagged.sum()), "clean_rows": len(clean),
                          "clean_rows_8plus": int(long.sum()), "clean_fpr_8plus": float(flagged[long].mean()),
                          "index_and_null_seconds": round(seconds, 1)})
            print(table[-1], flush=True)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--planted-rows", type=int, default=2000)
    p.add_argument("--copies", type=int, default=500, help="training rows edited 1, 2 and 3 times each")
    p.add_argument("--fpr", default="0.001,0.002,0.005,0.01")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the numbers as JSON here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = {"planted": planted(args.planted_rows, args.seed)}
    print(json.dumps(result["planted"], indent=1), flush=True)
    result["ngram"] = ngram_counts()
    result["minhash"] = minhash([float(x) for x in args.fpr.split(",")], args.copies, args.seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"total {result['seconds']}s")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
