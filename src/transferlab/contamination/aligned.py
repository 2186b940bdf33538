"""Verify candidate image pairs by aligned normalised cross-correlation: shifted and cropped copies found.

Perceptual hashes and pixel thumbnails compare images position by position, so a copy shifted by 3 pixels
or cropped to 80 % and resized back scores like a stranger (measured on CIFAR-10 in docs/contamination.md).
This module scores a *pair* (target, candidate source) by the best normalised cross-correlation (Pearson
correlation of the pixels) over a small search of alignments:

- scale 1 (shifts): the target's central window (a `shift`-pixel margin cut off, since a shifted copy's
  border holds no source content) slid over every position of the source within +-`shift` pixels;
- scales f < 1 (crops): the target resized to f x its side (a crop of fraction f of the source, resized
  back up, shrinks to the crop's own size) and slid over every position of the source; and the same with the
  roles swapped (`symmetric_pair_scores`), for a source that holds a cropped copy of the target.

Both images are grey (`image_matching.to_grey32`: 32 x 32) and band-pass filtered first (a difference of
Gaussians, sigma 1 and 3 pixels): without it, two smooth images (a plane in an empty sky) correlate highly
at some alignment; with it, their flat regions carry no signal and edges must line up. The correlation is
invariant to brightness and contrast changes, so colour-jittered copies score as high as exact ones.

Written here because no maintained library scores batches of pairs this way: OpenCV's `matchTemplate`
computes the same correlation for one pair per call (and would add a 50 MB dependency); here one grouped
convolution scores thousands of pairs at once.

    scores = aligned_scores(target_grey, source_grey)   # (P, 32, 32) each, pair p = (target p, source p)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

CROP_FRACTIONS = (1.0, 0.9, 0.86, 0.82, 0.78, 0.75)  # scale 1 for shifts; the rest: crops of 75-90 % a side
MAX_SHIFT = 3  # pixels, at 32 x 32
DOG_SIGMAS = (1.0, 3.0)
_EPS = 1e-6


def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) Gaussian blur along one axis with the edges replicated: blur(X) = B @ X @ B.T."""
    radius = int(3 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-offsets.float() ** 2 / (2 * sigma * sigma))
    weights = weights / weights.sum()
    b = torch.zeros(n, n)
    for off, w in zip(offsets.tolist(), weights.tolist()):
        cols = (torch.arange(n) + off).clamp(0, n - 1)  # replicate padding: taps past the edge hit the edge
        b[torch.arange(n), cols] += w
    return b


def band_pass(grey: torch.Tensor, sigmas: tuple[float, float] = DOG_SIGMAS) -> torch.Tensor:
    """Difference of Gaussians of (..., H, W) grey images: fine detail minus the smooth background. Two
    matrix products per blur (a 1-channel convolution is far slower on a CPU)."""
    h, w = grey.shape[-2:]
    out = torch.zeros_like(grey, dtype=torch.float32)
    for sign, sigma in ((1.0, sigmas[0]), (-1.0, sigmas[1])):
        out += sign * (_blur_matrix(h, sigma) @ grey.float() @ _blur_matrix(w, sigma).T)
    return out


def _window_sums(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of every size x size window of (..., H, W): ones-band matrices on both sides (a box filter)."""
    h, w = x.shape[-2:]

    def band(n: int) -> torch.Tensor:  # (n - size + 1, n): row i sums inputs i .. i + size - 1
        i = torch.arange(n - size + 1)[:, None]
        j = torch.arange(n)[None, :]
        return ((j >= i) & (j < i + size)).to(x.dtype)

    return band(h) @ x @ band(w).T


def _best_correlation(template: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
    """Max over positions of the Pearson correlation of template p (P, 1, t, t) with each t x t window of
    search p (P, 1, H, W): one grouped convolution, windows' means and norms from box sums."""
    p, _, t, _ = template.shape
    n = t * t
    z = template - template.mean((2, 3), keepdim=True)
    z_norm = z.flatten(1).norm(dim=1).clamp_min(_EPS)
    s = search.transpose(0, 1)  # (1, P, H, W): pair p's source is channel p
    num = F.conv2d(s, z, groups=p)[0]  # (P, H-t+1, W-t+1); z is zero-mean, so the windows' means drop out
    s1, s2 = _window_sums(s, t)[0], _window_sums(s * s, t)[0]
    s_norm = (s2 - s1 * s1 / n).clamp_min(_EPS * _EPS).sqrt()
    corr = num / (s_norm * z_norm[:, None, None])
    # a flat window or template (a blank frame) correlates with nothing: its band-pass is rounding noise
    flat = (s_norm < 1e-3 * n ** 0.5) | (z_norm < 1e-3 * n ** 0.5)[:, None, None]
    return corr.masked_fill(flat, -1.0).flatten(1).max(1).values


@torch.no_grad()
def templates(target_grey: torch.Tensor, fractions: Sequence[float] = CROP_FRACTIONS,
              max_shift: int = MAX_SHIFT) -> list[torch.Tensor]:
    """For each fraction f, each target's band-passed template (N, 1, t, t): the target resized to f x its
    side (scale 1: as it is), with a margin cut off (scale 1: `max_shift` pixels, since a shifted copy's
    border holds no source content; else 1 pixel, since a crop's resized edge blends in what lay outside)."""
    if target_grey.dim() != 3:
        raise ValueError(f"expected an (N, H, W) stack, got {tuple(target_grey.shape)}")
    if not fractions or any(not 0.5 <= f <= 1.0 for f in fractions):
        raise ValueError(f"crop fractions must be in 0.5..1, got {list(fractions)}")
    h = target_grey.shape[1]
    if not 0 <= max_shift < h // 4:
        raise ValueError(f"max_shift must be in 0..{h // 4 - 1} for {h}-pixel images, got {max_shift}")
    grey = target_grey.float()[:, None]
    out = []
    for f in fractions:
        m = round(h * f)
        scaled = grey if m == h else F.interpolate(grey, size=(m, m), mode="bilinear", antialias=True,
                                                   align_corners=False)
        margin = max_shift if m == h else 1
        out.append(band_pass(scaled)[:, :, margin:m - margin, margin:m - margin].contiguous())
    return out


@torch.no_grad()
def pair_scores(target_templates: list[torch.Tensor], source_band: torch.Tensor, target_rows: torch.Tensor,
                source_rows: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Best aligned correlation of pairs (target_rows[p], source_rows[p]): `templates` of the targets,
    `band_pass` of the sources (S, H, W). Scored `chunk` pairs at a time (memory ~ chunk x 20 KB)."""
    out = torch.empty(len(target_rows))
    for a in range(0, len(target_rows), chunk):
        t_rows, s_rows = target_rows[a:a + chunk], source_rows[a:a + chunk]
        search = source_band[s_rows][:, None]
        best = torch.full((len(t_rows),), -1.0)
        for tpl in target_templates:
            best = torch.maximum(best, _best_correlation(tpl[t_rows], search))
        out[a:a + chunk] = best
    return out


@torch.no_grad()
def symmetric_pair_scores(target_grey: torch.Tensor, source_grey: torch.Tensor, target_rows: torch.Tensor,
                          source_rows: torch.Tensor, fractions: Sequence[float] = CROP_FRACTIONS,
                          max_shift: int = MAX_SHIFT, chunk: int = 4096) -> torch.Tensor:
    """`pair_scores` both ways: the target found in the source (the target is a crop of the source) and the
    source found in the target (the source holds a crop of the target: a leaked, cropped copy of a test image).
    target_grey (T, H, W), source_grey (S, H, W); pairs (target_rows[p], source_rows[p]). The sources'
    templates are made per chunk, so memory stays ~ chunk x 30 KB beyond the band-passed images."""
    forward = pair_scores(templates(target_grey, fractions, max_shift), band_pass(source_grey), target_rows,
                          source_rows, chunk)
    crops = [f for f in fractions if round(target_grey.shape[1] * f) != target_grey.shape[1]]
    if not crops:  # scale 1 alone is the same shift search either way
        return forward
    target_band = band_pass(target_grey)
    for a in range(0, len(target_rows), chunk):
        s_rows, t_rows = source_rows[a:a + chunk], target_rows[a:a + chunk]
        chunk_rows = torch.arange(len(s_rows))
        reverse = pair_scores(templates(source_grey[s_rows], crops, max_shift), target_band[t_rows], chunk_rows,
                              chunk_rows, chunk)
        forward[a:a + chunk] = torch.maximum(forward[a:a + chunk], reverse)
    return forward


def aligned_scores(target_grey: torch.Tensor, source_grey: torch.Tensor,
                   fractions: Sequence[float] = CROP_FRACTIONS, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Best aligned correlation of each pair, either way round (`symmetric_pair_scores`): target p (P, H, W)
    against source p (P, H, W), in -1..1.

    About 1.0 for a copy, also shifted by up to `max_shift` pixels, cropped to about one of `fractions` and
    resized back (either image the crop), blurred, recoloured or re-encoded; a different photograph scores lower
    (calibrated in `detect.calibrate_images`)."""
    if target_grey.shape != source_grey.shape or target_grey.dim() != 3:
        raise ValueError(f"expected two (P, H, W) stacks of one shape, got {tuple(target_grey.shape)} "
                         f"and {tuple(source_grey.shape)}")
    rows = torch.arange(len(target_grey))
    return symmetric_pair_scores(target_grey, source_grey, rows, rows, fractions, max_shift)
