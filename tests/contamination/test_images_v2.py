"""Image contamination that holds on any data: thresholds calibrated on the data (or the method switched off with a
warning), flipped copies, retrieval by crop views, the on-disk feature store and the faiss index.

Measured here (one thread of a busy 2-core machine): digits train (1,151) against digits test (359, `--test-fraction
0.2`): 1 test digit flagged (0.3 %), dHash unusable; the calibration's flipped copies are all found by `aligned`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from transferlab.contamination.ann import EmbeddingIndex, recall_at_k
from transferlab.contamination.calibrate import choose_thresholds, data_threshold
from transferlab.contamination.detect import crop_thumbnails, match_images, thumbnails
from transferlab.contamination.feature_store import FeatureStore
from transferlab.contamination.image_features import features_from_arrays
from transferlab.contamination.image_matching import cosine_nearest

THRESHOLDED = ("phash", "dhash", "embedding", "aligned")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.round(load_digits().images * (255 / 16)).astype(np.uint8)


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))


@pytest.fixture(scope="module")
def digits_check(tmp_path_factory):
    """`transferlab contamination` on digits train against digits test, the defaults (data-calibrated at fpr 0.001),
    with 40 copied images for the calibration."""
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("digits_check") / "chk"
    code = main(["contamination", "--source", "digits", "--target", "digits", "--split", "test",
                 "--test-fraction", "0.2", "--calibrate", "40", "--out", str(out)])
    assert code in (0, None)
    return json.loads((out / "summary.json").read_text(encoding="utf-8")), out


# ---- thresholds that hold on any data ----------------------------------------------------------------------------
def test_clean_digits_are_at_most_1pct_flagged_or_the_method_is_unusable_with_a_warning(digits_check):
    s, out = digits_check
    assert s["n_target"] == 359 and s["source"]["n"] == 1151
    assert s["dirty_fraction"] <= 0.01, s["methods"]
    for m in THRESHOLDED:
        e = s["methods"][m]
        if e["unusable"]:
            assert e["disabled"] and e["n_dirty"] == 0 and e["match_if"].startswith("disabled:")
            assert any(w.startswith(f"{m} disabled for this run") for w in s["warnings"])
        else:
            assert e["dirty_fraction"] <= 0.01 and e["null_rate"] <= 0.01
    assert "lie at distance 0 from another" in s["methods"]["dhash"]["unusable"]  # 8 x 8 digits share dHashes
    page = (out / "contamination.html").read_text(encoding="utf-8")
    assert "dhash disabled for this run" in page


def test_uniform_images_switch_the_hashes_off_and_aligned_flags_nothing():
    """Flat images of different grey levels: distinct pixels, but every hash is 0 and no window has structure."""
    images = [np.full((16, 16, 3), 20 + 9 * i, np.uint8) for i in range(25)]
    src = features_from_arrays(images, [f"s{i}" for i in range(25)])
    chosen = choose_thresholds(src, ("exact", "phash", "dhash", "aligned"))
    assert chosen.choices["phash"].disabled and chosen.choices["dhash"].disabled
    assert any(w.startswith("phash disabled") for w in chosen.warnings)
    found = match_images(src.subset(range(5)), src.subset(range(5, 25)), ("aligned",))
    assert not found["aligned"].dirty(chosen.choices["aligned"].threshold).any()


def test_a_similarity_whose_null_sits_at_the_maximum_is_unusable():
    choice = data_threshold("embedding", np.ones(2000), fpr=0.001)
    assert choice.disabled and "1.0000 or more" in choice.disabled_because and choice.warning


def test_the_calibrations_planted_copies_are_reported_with_their_recall(digits_check):
    s, _ = digits_check
    cal = s["calibration"]
    assert cal["n_copied"] == 40 and "flip" in cal["kinds"]
    aligned = cal["methods"]["aligned"]
    assert s["methods"]["aligned"]["copy_recall"] == aligned["recall"]
    assert aligned["recall_by_kind"]["flip"] == 1.0 and aligned["recall_by_kind"]["jitter"] >= 0.8
    assert cal["any"]["false_positive_rate"] <= 0.01


# ---- flips ---------------------------------------------------------------------------------------------------
def test_flipped_copies_are_found_either_way_round(digits):
    order = np.random.default_rng(1).permutation(len(digits))
    source_rows = order[:300]
    src = features_from_arrays([_rgb(digits[i]) for i in source_rows], [f"s{i}" for i in source_rows])
    # targets: 40 source digits mirrored (the target is the flipped copy) ...
    mirrored = features_from_arrays([_rgb(digits[i][:, ::-1]) for i in source_rows[:40]], [str(i) for i in range(40)])
    found = match_images(mirrored, src, ("aligned",))["aligned"]
    assert (found.source == np.arange(40)).mean() >= 0.95 and np.median(found.score) > 0.99
    plain = match_images(mirrored, src, ("aligned",), flip=False)["aligned"]
    assert np.median(plain.score) < np.median(found.score) - 0.05  # unflipped, a mirror is a different image
    # ... and the source holds the flipped copy of a target (a leaked mirrored test image)
    leaked = features_from_arrays([_rgb(digits[i][:, ::-1]) for i in source_rows], [f"m{i}" for i in source_rows])
    originals = src.subset(range(40))
    back = match_images(originals, leaked, ("aligned",))["aligned"]
    assert (back.source == np.arange(40)).mean() >= 0.95


def test_crop_views_are_a_three_by_three_grid_of_places():
    grey = torch.rand(3, 32, 32) * 255
    views = crop_thumbnails(grey)  # 26 x 26 crops (0.8 of 32) at offsets 0, 3, 6 down and across
    assert views.shape == (27, 64)
    assert torch.allclose(views[0], thumbnails(grey[:1, 0:26, 0:26])[0], atol=1e-5)  # image 0, top-left corner
    assert torch.allclose(views[4], thumbnails(grey[:1, 3:29, 3:29])[0], atol=1e-5)  # image 0, centre
    assert torch.allclose(views[9 + 5], thumbnails(grey[1:2, 3:29, 6:32])[0], atol=1e-5)  # image 1, right middle
    assert torch.allclose(views[9 + 8], thumbnails(grey[1:2, 6:32, 6:32])[0], atol=1e-5)  # image 1, bottom-right


# ---- the faiss index -----------------------------------------------------------------------------------------
def _clustered(n: int, d: int, seed: int, centres: int = 200) -> np.ndarray:
    """Random but structured: Gaussian clusters around `centres` random directions, rows L2-normalised."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _chunks(x: np.ndarray, size: int):
    return lambda: (x[a:a + size] for a in range(0, len(x), size))


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_the_index_returns_the_exact_neighbours_on_a_small_case(kind):
    x = _clustered(400, 32, 0, centres=20)
    q = _clustered(30, 32, 1, centres=20)
    index = EmbeddingIndex(kind, nlist=16, nprobe=16, ef_search=400).build(_chunks(x, 128), n=len(x))
    scores, rows = index.search(q, 5)
    exact_rows, exact_scores = cosine_nearest(torch.from_numpy(q), torch.from_numpy(x), k=5)
    assert (rows == exact_rows.numpy()).all()
    assert np.allclose(scores, exact_scores.numpy(), atol=1e-5)


def test_ivf_recall_on_a_medium_synthetic_case_is_at_least_0_95():
    """20,000 clustered vectors (D = 64), 300 queries: top-10 recall of IVF-Flat at the defaults (nlist = 4 sqrt(N),
    nprobe 32) against the exact search. Measured: 0.99+."""
    x = _clustered(20000, 64, 2)
    q = _clustered(300, 64, 3)
    index = EmbeddingIndex("ivf").build(_chunks(x, 4096), n=len(x))
    _, rows = index.search(q, 10)
    exact = cosine_nearest(torch.from_numpy(q), torch.from_numpy(x), k=10)[0].numpy()
    assert recall_at_k(rows, exact) >= 0.95


# ---- the feature store ---------------------------------------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_store_maps_one_shard_at_a_time_and_its_memory_does_not_grow_with_the_shards_read(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    images = [np.roll(base[i % 64], i // 64, axis=1) for i in range(12000)]
    store = FeatureStore.extract(tmp_path / "store", None, [str(i) for i in range(len(images))],
                                 arrays=images, shard_size=1000)
    del images
    assert len(store) == 12000 and store.complete and len(store.manifest["shards"]) == 12
    rss, total = [], 0.0
    for shard in store.shards():  # each shard's grey images: 2 MB; all 12: 24 MB
        total += float(np.asarray(shard.grey, dtype=np.float32).sum())
        rss.append(_rss_mb())
    assert store.max_open_maps == 1 and store.open_maps == 0
    assert rss[-1] - rss[2] < 8, rss  # not the 18 MB that 9 more shards' pages would add
    rows = np.array([5, 999, 1000, 11999, 4321])
    grey = store.gather("grey", rows)
    assert grey.shape == (5, 32, 32) and store.max_open_maps == 1
    full = store.features()
    assert torch.equal(full.grey[torch.from_numpy(rows)], torch.from_numpy(grey))


KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from sklearn.datasets import load_digits
    from transferlab.contamination.feature_store import FeatureStore

    d = np.round(load_digits().images[:700] * (255 / 16)).astype(np.uint8)
    images = [np.repeat(g[..., None], 3, axis=-1) for g in d]

    def die(i):
        if i == 2:  # killed (SIGKILL: no clean-up) right after the third shard is recorded
            os.kill(os.getpid(), signal.SIGKILL)

    FeatureStore.extract(sys.argv[1], None, [str(i) for i in range(700)], arrays=images, shard_size=100,
                         on_shard=die)
""")


def test_a_killed_extraction_resumes_from_its_last_shard_and_gives_the_same_features(tmp_path, digits):
    root = tmp_path / "killed"
    script = tmp_path / "extract.py"
    script.write_text(KILLED, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(root)], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == -9, proc.stderr
    manifest = json.loads((root / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == ["shard_00000", "shard_00001", "shard_00002"]
    (root / "shard_00003").mkdir()  # as if killed between a shard's rename and its manifest entry
    (root / "shard_00003" / "grey.npy").write_bytes(b"partial")
    images = [_rgb(g) for g in digits[:700]]
    ids = [str(i) for i in range(700)]
    resumed_shards = []
    resumed = FeatureStore.extract(root, None, ids, arrays=images, shard_size=100, on_shard=resumed_shards.append)
    assert resumed_shards == [3, 4, 5, 6]  # only the missing shards were computed
    whole = FeatureStore.extract(tmp_path / "whole", None, ids, arrays=images, shard_size=100)
    a, b = resumed.features(), whole.features()
    assert a.ids == b.ids == ids and a.keys == b.keys
    assert torch.equal(a.grey, b.grey) and (a.phash == b.phash).all() and (a.dhash == b.dhash).all()
    with pytest.raises(ValueError, match="other inputs"):
        FeatureStore.extract(root, None, ids[:-1], arrays=images[:-1], shard_size=100)
