"""Aligned normalised cross-correlation: the band-pass, the templates, a brute-force reference, and the effects
the module claims (shifted, cropped and recoloured copies score high; other photographs lower)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from tests.contamination.cifar import cifar_images
from transferlab.contamination import image_matching as im
from transferlab.contamination.aligned import (
    CROP_FRACTIONS,
    aligned_scores,
    band_pass,
    pair_scores,
    templates,
)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """20 real CIFAR-10 training images (2 per class), 32 x 32 x 3 uint8."""
    return cifar_images(range(2))


def _grey(images) -> torch.Tensor:
    return torch.stack([torch.from_numpy(im.to_grey32(a)) for a in images])  # (N, 32, 32)


def _dog(x: np.ndarray) -> np.ndarray:
    """Reference difference of Gaussians: sigma 1 minus sigma 3, radius 3 sigma, edges replicated."""
    x = x.astype(np.float64)
    return (gaussian_filter(x, 1.0, mode="nearest", truncate=3.0)
            - gaussian_filter(x, 3.0, mode="nearest", truncate=3.0))


def _crop_back(rgb: np.ndarray, frac: float, top: int, left: int) -> np.ndarray:
    """A square crop of `frac` of each side at (top, left), resized back to the full size (bicubic)."""
    c = round(rgb.shape[0] * frac)
    img = Image.fromarray(rgb).crop((left, top, left + c, top + c))
    return np.asarray(img.resize(rgb.shape[1::-1], Image.Resampling.BICUBIC))


def _brute_force(tpls: list[torch.Tensor], source_band: torch.Tensor, t: int, s: int) -> float:
    """Max Pearson correlation of target t's templates with every same-size window of source s (loops)."""
    src = source_band[s].double().numpy()
    best = -1.0
    for tpl in tpls:
        z = tpl[t, 0].double().numpy()
        k = z.shape[0]
        for i in range(src.shape[0] - k + 1):
            for j in range(src.shape[1] - k + 1):
                w = src[i:i + k, j:j + k]
                if w.std() < 1e-3:  # a flat window correlates with nothing
                    continue
                best = max(best, float(np.corrcoef(z.ravel(), w.ravel())[0, 1]))
    return best


# ---- band_pass and templates -------------------------------------------------------------------------------
def test_band_pass_is_a_difference_of_gaussians_with_replicated_edges(photos):
    grey = _grey(photos[:4])
    out = band_pass(grey)
    assert out.shape == grey.shape and out.dtype == torch.float32
    for g, o in zip(grey, out):
        assert np.abs(o.numpy() - _dog(g.numpy())).max() < 1e-3  # values are in 0..255 units
    # a non-square image: each axis has its own blur matrix
    rect = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (20, 27))).float()
    assert np.abs(band_pass(rect).numpy() - _dog(rect.numpy())).max() < 1e-3
    # flat regions carry no signal: a constant image band-passes to zero, so does a brightness offset
    assert band_pass(torch.full((32, 32), 117.0)).abs().max() < 1e-3
    assert torch.allclose(band_pass(grey + 40.0), out, atol=1e-3)


def test_templates_are_the_central_window_at_scale_1_and_the_resized_target_otherwise(photos):
    grey = _grey(photos[:3])
    tpls = templates(grey)
    assert len(tpls) == len(CROP_FRACTIONS)
    for f, tpl in zip(CROP_FRACTIONS, tpls):
        m = round(32 * f)
        side = m - 2 * 3 if m == 32 else m - 2  # scale 1: the max_shift margin; crops: 1 pixel
        assert tpl.shape == (3, 1, side, side)
    ref = np.stack([_dog(g.numpy())[3:29, 3:29] for g in grey])
    assert np.abs(tpls[0][:, 0].numpy() - ref).max() < 1e-3
    # no shift: the whole band-passed image
    whole = templates(grey, fractions=(1.0,), max_shift=0)[0]
    assert whole.shape == (3, 1, 32, 32) and torch.allclose(whole[:, 0], band_pass(grey), atol=1e-5)


# ---- the correlation itself: a brute-force reference -------------------------------------------------------
def test_pair_scores_equal_a_brute_force_search_over_positions_and_scales(photos):
    rng = np.random.default_rng(1)
    targets = [photos[0], im._shift(photos[1], 2, -3), _crop_back(photos[2], 0.8, 2, 4),
               im.near_copies(photos[3], rng)["combo"], photos[4]]
    sources = photos[:5]
    tpls = templates(_grey(targets))
    source_band = band_pass(_grey(sources))
    pairs = [(t, s) for t in range(5) for s in range(5)]
    t_rows, s_rows = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    got = pair_scores(tpls, source_band, t_rows, s_rows)
    ref = np.array([_brute_force(tpls, source_band, t, s) for t, s in pairs])
    assert np.abs(got.numpy() - ref).max() < 1e-4
    # chunking changes nothing
    assert torch.allclose(pair_scores(tpls, source_band, t_rows, s_rows, chunk=3), got, atol=1e-6)


def test_aligned_scores_search_both_ways_round(photos):
    """aligned_scores(target p, source p): the best of the target found in the source (all scales) and the
    source's crop templates found in the target (a source holding a cropped copy of the target)."""
    targets = [photos[5], _crop_back(photos[6], 0.8, 3, 1), photos[7], photos[8]]
    sources = [photos[5], photos[6], _crop_back(photos[7], 0.75, 0, 6), photos[0]]
    forward_tpls, source_band = templates(_grey(targets)), band_pass(_grey(sources))
    reverse_tpls, target_band = templates(_grey(sources), CROP_FRACTIONS[1:]), band_pass(_grey(targets))
    ref = [max(_brute_force(forward_tpls, source_band, p, p), _brute_force(reverse_tpls, target_band, p, p))
           for p in range(4)]
    got = aligned_scores(_grey(targets), _grey(sources))
    assert np.abs(got.numpy() - np.array(ref)).max() < 1e-4
    # the effect: a source holding a crop of the target is found although the target is not a crop of it
    assert got[2] > 0.9 and got[3] < 0.8


# ---- the claimed effects -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dy, dx", [(3, 0), (0, -3), (3, 3), (-3, 2), (1, -1)])
def test_copy_shifted_by_up_to_3_pixels_scores_above_0_95(photos, dy, dx):
    shifted = _grey([im._shift(a, dy, dx) for a in photos])
    assert aligned_scores(shifted, _grey(photos)).min() > 0.95


def test_near_copies_shift_kind_scores_above_0_95(photos):
    rng = np.random.default_rng(0)
    shifted = _grey([im.near_copies(a, rng)["shift"] for a in photos])
    assert aligned_scores(shifted, _grey(photos)).min() > 0.95


@pytest.mark.parametrize("top, left", [(0, 0), (3, 3), (6, 6), (0, 6)])
def test_crop_of_80_percent_resized_back_scores_above_0_9(photos, top, left):
    cropped = _grey([_crop_back(a, 0.8, top, left) for a in photos[:10]])
    scores = aligned_scores(cropped, _grey(photos[:10]))
    assert scores.min() > 0.9
    # without the crop scales the same copies score clearly lower: the scales are what finds them
    assert aligned_scores(cropped, _grey(photos[:10]), fractions=(1.0,)).median() < scores.median() - 0.05


def test_brightness_and_contrast_change_leaves_an_identical_image_at_1(photos):
    grey = _grey(photos)
    assert aligned_scores(grey, grey).min() > 1 - 1e-4
    assert aligned_scores(0.7 * grey + 30.0, grey).min() > 1 - 1e-4  # affine on the grey pixels
    # and on the RGB pixels (no clipping: 0.8 x 255 + 20 < 255), through the 8-bit rounding
    recoloured = [np.round(0.8 * a.astype(np.float64) + 20).astype(np.uint8) for a in photos]
    assert aligned_scores(_grey(recoloured), grey).min() > 0.999


def test_different_photographs_score_clearly_lower(photos):
    grey = _grey(photos)
    pairs = list(itertools.permutations(range(len(photos)), 2))
    t, s = [p[0] for p in pairs], [p[1] for p in pairs]
    strangers = aligned_scores(grey[t], grey[s])
    assert strangers.max() < 0.8 and strangers.median() < 0.5
    shifted = aligned_scores(_grey([im._shift(a, 2, 2) for a in photos]), grey)
    assert shifted.min() > strangers.max() + 0.15


def test_a_flat_source_window_correlates_with_nothing(photos):
    grey = _grey(photos[:3])
    flat = torch.full_like(grey, 128.0)
    rows = torch.arange(3)
    scores = pair_scores(templates(grey), band_pass(flat), rows, rows)
    assert torch.equal(scores, torch.full((3,), -1.0))


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, source", [
    (torch.zeros(2, 32, 32), torch.zeros(3, 32, 32)),
    (torch.zeros(2, 32, 32), torch.zeros(2, 32, 31)),
    (torch.zeros(32, 32), torch.zeros(32, 32)),
])
def test_aligned_scores_refuses_stacks_of_different_shapes(target, source):
    with pytest.raises(ValueError, match=r"\(P, H, W\) stacks of one shape"):
        aligned_scores(target, source)


@pytest.mark.parametrize("fractions", [(), (1.0, 0.4), (1.1,), (0.9, -0.5)])
def test_crop_fractions_out_of_range_are_refused(fractions):
    with pytest.raises(ValueError, match="crop fractions must be in 0.5..1"):
        templates(torch.zeros(2, 32, 32), fractions=fractions)
    with pytest.raises(ValueError, match="crop fractions"):
        aligned_scores(torch.zeros(2, 32, 32), torch.zeros(2, 32, 32), fractions=fractions)


@pytest.mark.parametrize("side, shift, ok", [(32, 7, True), (32, 8, False), (32, -1, False), (16, 3, True),
                                             (16, 4, False)])
def test_max_shift_must_stay_below_a_quarter_of_the_side(side, shift, ok):
    grey = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, side, side))).float()
    if ok:
        assert aligned_scores(grey, grey, max_shift=shift).min() > 1 - 1e-4
    else:
        with pytest.raises(ValueError, match=f"max_shift must be in 0..{side // 4 - 1}"):
            aligned_scores(grey, grey, max_shift=shift)


def test_templates_needs_a_stack():
    with pytest.raises(ValueError, match=r"\(N, H, W\) stack"):
        templates(torch.zeros(32, 32))
