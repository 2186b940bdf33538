"""Time and peak memory of the approximate index (contamination/ann.py) on synthetic features, and the recall it
loses against the exact search (docs/contamination.md, "The store and the index").

The features are synthetic, random but structured: Gaussian clusters around 1,000 random directions, rows
L2-normalised, written chunk by chunk to a memory-mapped .npy file (the store's layout), so generating them holds
one chunk. Queries: 1,000 near-copies of database rows (the row plus noise of 10 % of its norm: what the
contamination search looks for) and 1,000 fresh rows of the same distribution. Each size runs in its own process,
so its peak RSS (ru_maxrss: the index, the search, the mapped pages read) is its own.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/contamination_index.py --sizes 10000 100000 1000000 --dim 128 \\
        --recall-n 50000 --recall-dim 1280 --out index.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 50_000


def write_features(path: Path, n: int, d: int, seed: int, centres: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for a in range(0, n, CHUNK):
        m = min(CHUNK, n - a)
        x = c[rng.integers(0, centres, m)] + 0.6 * rng.standard_normal((m, d)).astype(np.float32)
        out[a:a + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    return c


def queries(db: np.ndarray, centres: np.ndarray, seed: int, m: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    own = np.sort(rng.choice(len(db), m, replace=False))
    near = np.asarray(db[own]) + 0.1 / np.sqrt(db.shape[1]) * rng.standard_normal((m, db.shape[1])).astype(np.float32)
    fresh = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, db.shape[1])).astype(np.float32)
    q = np.concatenate([near, fresh]).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True), own


def one(n: int, d: int, kind: str, nprobe: int, exact: bool) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import faiss

    from transferlab.contamination.ann import EmbeddingIndex, default_nlist, recall_at_k

    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embedding.npy"
        t0 = time.perf_counter()
        centres = write_features(path, n, d, seed=0)
        gen = time.perf_counter() - t0
        db = np.load(path, mmap_mode="r")
        q, own = queries(db, centres, seed=1)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        index = EmbeddingIndex(kind, nprobe=nprobe).build(lambda: (db[a:a + CHUNK] for a in range(0, n, CHUNK)), n=n)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, rows = index.search(q, 10)
        search = time.perf_counter() - t0
        row = {"n": n, "dim": d, "kind": kind, "nlist": default_nlist(n) if kind == "ivf" else None,
               "nprobe": nprobe if kind == "ivf" else None, "generate_s": round(gen, 1), "build_s": round(build, 1),
               "search_s_2000_queries": round(search, 2),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "rss_before_index_mb": round(rss0, 1),
               "index_mb": round(n * d * 4 / 2**20 + (n * 8 / 2**20 if kind == "ivf" else 0), 1),
               "copy_found_top10": float(np.mean([o in r for o, r in zip(own, rows[:len(own)])]))}
        if exact:
            del index
            t0 = time.perf_counter()
            flat = EmbeddingIndex("flat").build(lambda: (db[a:a + CHUNK] for a in range(0, n, CHUNK)), n=n)
            _, exact_rows = flat.search(q, 10)
            row["exact_search_s"] = round(time.perf_counter() - t0, 2)
            row["recall_at_10_vs_exact"] = recall_at_k(rows, exact_rows)
            row["recall_at_1_vs_exact"] = float(np.mean(rows[:, 0] == exact_rows[:, 0]))
            row["exact_copy_found_top10"] = float(np.mean([o in r for o, r in zip(own, exact_rows[:len(own)])]))
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--kind", default="ivf")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--recall-n", type=int, default=50_000)
    ap.add_argument("--recall-dim", type=int, default=1280, help="EfficientNet-Lite0's pooled features")
    ap.add_argument("--one", nargs=3, metavar=("N", "DIM", "EXACT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.one:
        n, d, exact = int(args.one[0]), int(args.one[1]), args.one[2] == "1"
        print(json.dumps(one(n, d, args.kind, args.nprobe, exact)))
        return
    rows = []
    cases = [(n, args.dim, "0") for n in args.sizes]
    if args.recall_n:
        cases.append((args.recall_n, args.recall_dim, "1"))
    for n, d, exact in cases:
        out = subprocess.run([sys.executable, __file__, "--kind", args.kind, "--nprobe", str(args.nprobe),
                              "--one", str(n), str(d), exact], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
