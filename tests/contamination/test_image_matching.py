"""Image matching for contamination checks: hashes, exact nearest-neighbour search, near-copies, calibration."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_data
from transferlab.contamination import image_matching as im
from transferlab.contamination.image_matching import (
    COPY_KINDS,
    cosine_nearest,
    dhash,
    exact_matches,
    hamming_distance,
    hamming_nearest,
    image_hashes,
    near_copies,
    phash,
    phash_batch,
    pixel_hash,
    to_grey32,
)


@pytest.fixture(scope="module")
def cifar_images() -> list[np.ndarray]:
    """50 real CIFAR-10 test images (5 per class), 32 x 32 x 3 uint8."""
    cifar_test = shared_data("cifar10") / "test"
    classes = sorted(p.name for p in cifar_test.iterdir())
    return [np.asarray(Image.open(cifar_test / c / f"{i:04d}.jpg").convert("RGB")) for i in range(5) for c in classes]


def _smooth_images(n: int, seed: int, size: int = 32) -> list[np.ndarray]:
    """n distinct smooth colour images: 4 x 4 random colours upsampled (bicubic) to size x size."""
    rng = np.random.default_rng(seed)
    return [np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC)) for _ in range(n)]


# ---- pixel_hash -------------------------------------------------------------------------------------------------
def test_pixel_hash_equal_pixels_equal_keys_one_changed_pixel_differs():
    a = _smooth_images(1, 0)[0]
    b = a.copy()
    assert pixel_hash(a) == pixel_hash(b)
    assert pixel_hash(np.asfortranarray(a)) == pixel_hash(a)  # memory layout does not matter, pixels do
    b[31, 0, 2] ^= 1
    assert pixel_hash(b) != pixel_hash(a)
    assert pixel_hash(a.reshape(16, 64, 3)) != pixel_hash(a)  # same bytes, other shape


def test_exact_matches_first_source_index_or_minus_one():
    assert exact_matches(["b", "x", "a"], ["a", "b", "b", "a"]).tolist() == [1, -1, 0]


# ---- perceptual hashes ------------------------------------------------------------------------------------------
def test_phash_jpeg_reencode_is_near_and_unrelated_images_far(cifar_images):
    for img in cifar_images:
        assert hamming_distance(phash(img), phash(im._jpeg(img, 50))) <= 6
    hashes = image_hashes(cifar_images, "phash")
    pairs = [hamming_distance(a, b) for a, b in itertools.combinations(hashes.tolist(), 2)]
    assert min(pairs) >= 12 and np.median(pairs) >= 24


def test_dhash_jpeg_reencode_is_near_and_unrelated_images_far(cifar_images):
    for img in cifar_images:
        assert hamming_distance(dhash(img), dhash(im._jpeg(img, 75))) <= 4
    hashes = image_hashes(cifar_images, "dhash")
    assert min(hamming_distance(a, b) for a, b in itertools.combinations(hashes.tolist(), 2)) >= 10


def test_phash_ignores_dc_brightness_and_contrast(cifar_images):
    grey = np.stack([to_grey32(x) for x in cifar_images])  # (N, 32, 32)
    h = phash_batch(grey)
    assert np.all(h >> np.uint64(63) == 0)  # the DC bit is always 0
    assert np.array_equal(phash_batch(grey * 0.5), h)  # contrast: x 0.5 is exact in floating point
    brighter = phash_batch(grey + 17.0)  # brightness: only the DC term changes (up to rounding)
    assert max(hamming_distance(a, b) for a, b in zip(brighter.tolist(), h.tolist())) <= 1


def test_single_and_batch_hashes_agree_and_larger_images_are_resized(cifar_images):
    img = cifar_images[3]
    assert phash(img) == int(image_hashes([img], "phash")[0])
    assert dhash(img) == int(image_hashes([img], "dhash", chunk=1)[0])
    big = np.asarray(Image.fromarray(img).resize((96, 96), Image.Resampling.BICUBIC))
    assert hamming_distance(phash(big), phash(img)) <= 6
    with pytest.raises(ValueError):
        image_hashes([img], "ahash")


# ---- hamming_nearest --------------------------------------------------------------------------------------------
def _hamming_brute(t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.array([[(int(a) ^ int(b)).bit_count() for b in s] for a in t])
    return d.argmin(1), d.min(1)  # argmin: the first minimum, i.e. the lowest index


@pytest.mark.parametrize("chunk,source_chunk", [(1, 1), (7, 9), (10, 20), (64, 1000)])
def test_hamming_nearest_equals_brute_force(chunk, source_chunk):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2 ** 64, size=30, dtype=np.uint64)
    s = rng.integers(0, 2 ** 64, size=40, dtype=np.uint64)
    s[25] = t[4]  # an exact hit
    idx, dist = hamming_nearest(t, s, chunk=chunk, source_chunk=source_chunk)
    ref_idx, ref_dist = _hamming_brute(t, s)
    assert np.array_equal(dist, ref_dist) and np.array_equal(idx, ref_idx)
    assert idx[4] == 25 and dist[4] == 0


@pytest.mark.parametrize("chunk,source_chunk", [(3, 4), (5, 50)])
def test_hamming_nearest_ties_go_to_the_lowest_source_index(chunk, source_chunk):
    rng = np.random.default_rng(1)
    t = rng.integers(0, 16, size=25, dtype=np.uint64)  # 4-bit codes: ties everywhere
    s = rng.integers(0, 16, size=50, dtype=np.uint64)
    idx, dist = hamming_nearest(t, s, chunk=chunk, source_chunk=source_chunk)
    ref_idx, ref_dist = _hamming_brute(t, s)
    assert np.array_equal(dist, ref_dist) and np.array_equal(idx, ref_idx)
    for i in range(len(t)):  # no lower source index is as near
        assert all(hamming_distance(t[i], s[j]) > dist[i] for j in range(idx[i]))


def test_hamming_nearest_byte_table_fallback(monkeypatch):
    rng = np.random.default_rng(2)
    t = rng.integers(0, 2 ** 64, size=20, dtype=np.uint64)
    s = rng.integers(0, 2 ** 64, size=33, dtype=np.uint64)
    fast = hamming_nearest(t, s, chunk=6, source_chunk=10)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    slow = hamming_nearest(t, s, chunk=6, source_chunk=10)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert np.array_equal(slow[1], _hamming_brute(t, s)[1])


def test_hamming_nearest_rejects_empty_sources_and_float_hashes():
    with pytest.raises(ValueError):
        hamming_nearest(np.zeros(3, np.uint64), np.zeros(0, np.uint64))
    with pytest.raises(TypeError):
        hamming_nearest(np.zeros(3, np.float64), np.zeros(3, np.uint64))


# ---- cosine_nearest ---------------------------------------------------------------------------------------------
def _cosine_brute(t: torch.Tensor, s: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full float64 similarity matrix, each row ordered by (score descending, index ascending)."""
    tn = torch.nn.functional.normalize(t.double(), dim=1).numpy()
    sn = torch.nn.functional.normalize(s.double(), dim=1).numpy()
    sims = tn @ sn.T
    order = np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in sims])
    return order, np.take_along_axis(sims, order, 1)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk,source_chunk", [(8, 16), (5, 7), (1, 3), (100, 1000)])
def test_cosine_nearest_equals_brute_force(k, chunk, source_chunk):
    # T = 40, S = 48: chunks of 8 / 16 divide them, 5 / 7 and 1 / 3 do not all, 100 / 1000 exceed them.
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(40, 12, generator=g), torch.randn(48, 12, generator=g) * 3.0
    idx, sc = cosine_nearest(t, s, k=k, chunk=chunk, source_chunk=source_chunk)
    ref_idx, ref_sc = _cosine_brute(t, s, k + 1)
    assert idx.shape == (40, k) and sc.shape == (40, k) and sc.dtype == torch.float32
    np.testing.assert_allclose(sc.numpy(), ref_sc[:, :k], atol=1e-5)
    clear = (ref_sc[:, :-1] - ref_sc[:, 1:]).min(1) > 1e-4  # rows without a near tie in the top k + 1
    assert clear.sum() >= 30
    assert np.array_equal(idx.numpy()[clear], ref_idx[clear, :k])


@pytest.mark.parametrize("chunk,source_chunk", [(4, 5), (3, 64), (64, 2)])
def test_cosine_nearest_ties_lowest_index_first(chunk, source_chunk):
    # Unit vectors with four entries of +-0.5: every dot product is an exact multiple of 0.25, so scores tie
    # exactly whatever the summation order, and often.
    rng = np.random.default_rng(3)

    def units(n):
        v = np.zeros((n, 8), np.float32)
        for row in v:
            row[rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
        return torch.from_numpy(v)

    t, s = units(21), units(30)
    for k in (1, 4):
        idx, sc = cosine_nearest(t, s, k=k, chunk=chunk, source_chunk=source_chunk)
        ref_idx, ref_sc = _cosine_brute(t, s, k)
        assert np.array_equal(idx.numpy(), ref_idx)
        np.testing.assert_array_equal(sc.numpy(), ref_sc.astype(np.float32))


def test_cosine_nearest_validates_k_and_shapes():
    t, s = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError):
        cosine_nearest(t, s, k=6)
    with pytest.raises(ValueError):
        cosine_nearest(t, torch.randn(5, 3))
    idx, _ = cosine_nearest(t, s, k=5)  # k = S is allowed: a full ranking
    assert sorted(idx[0].tolist()) == [0, 1, 2, 3, 4]


# ---- near_copies ------------------------------------------------------------------------------------------------
def test_near_copies_deterministic_for_a_seed_and_each_differs_from_the_original(cifar_images):
    img = cifar_images[7]
    a = near_copies(img, np.random.default_rng(5))
    b = near_copies(img, np.random.default_rng(5))
    c = near_copies(img, np.random.default_rng(6))
    assert tuple(a) == COPY_KINDS
    for kind in COPY_KINDS:
        assert a[kind].shape == img.shape and a[kind].dtype == np.uint8
        assert np.array_equal(a[kind], b[kind])
        assert not np.array_equal(a[kind], img), kind
    assert any(not np.array_equal(a[kind], c[kind]) for kind in COPY_KINDS)


def test_shift_is_edge_padded():
    img = _smooth_images(1, 1)[0]
    out = im._shift(img, 2, -3)  # down 2, left 3
    assert np.array_equal(out[2:, :-3], img[:-2, 3:])
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[:, -1], out[:, -4])  # edges repeated
