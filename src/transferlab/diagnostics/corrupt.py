"""The 15 common corruptions of ImageNet-C / CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), severities 1-5.

`corrupt_image` applies one corruption to a PIL image; `corrupt_folder` writes a corrupted copy of an image folder
with the same layout (splits, class folders, file names) into a new or empty folder; other files are copied
unchanged. Unreadable images (decompression bombs included) and links that lead out of the folder are left out
and listed. Each image's randomness comes from a generator seeded by (seed, kind, severity, its relative path), so
a run is deterministic for a seed and independent of file order.

Parameters per severity are the constants of the paper's released code: `make_cifar_c.py` for small images
(`params="cifar"`) and `make_imagenet_c.py` for large ones (`params="imagenet"`); `params="auto"` (the default)
picks "cifar" for an image whose larger side is at most `SMALL_SIDE` px, "imagenet" otherwise. The functions are
written here with numpy, PIL and scipy.ndimage (no OpenCV, ImageMagick or scikit-image). Where they differ from the
released code (docs/diagnostics.md lists it too):

- **frost** blends a *procedurally synthesised* frost texture (ice needles on plasma noise, bluish white): the
  six frost photographs the paper crops from are not available here, so frost has the published blend weights
  but not the published texture, and its numbers are not comparable with ImageNet-C's / CIFAR-10-C's frost.
- **motion_blur** (and snow's blurred flakes) convolve with ImageMagick's motion-blur kernel re-implemented: a
  one-sided line of 2*ceil(radius)+1 taps with Gaussian weights exp(-i^2 / 2 sigma^2), at the random angle,
  taps at the nearest pixel, edges clamped; ImageMagick itself is not used.
- The paper works at one fixed size (224 or 32 px) after a resize and crop; here every image keeps its size.
  Sizes in pixels (blur sigmas and radii, glass-blur shifts, snow) are used as published; elastic_transform's
  constants, which the paper writes as multiples of the image size (244 for ImageNet-C, 32 for CIFAR-10-C), are
  scaled to the image (equal to the published ones at 224 and 32 px); pixelate and zoom are ratios.
- Pixels are rounded to 8 bits (the released code truncates with np.uint8); brightness converts through PIL's
  8-bit HSV (the released code: scikit-image's float HSV), so V moves by round(255 c) levels.
- glass_blur reproduces the released code's pixel "swap", which (a numpy view aliasing) copies the neighbour's
  pixel into place rather than exchanging the two.
- `blur`, the toolkit's earlier kind, is ImageNet-C's gaussian_blur (one of its 4 held-out extra corruptions).
  gaussian_noise, contrast, brightness, jpeg_compression (alias `jpeg`) and `blur` give exactly the previous
  outputs under the ImageNet-C parameters; on small images "auto" now applies the CIFAR-10-C parameters.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from transferlab.errors import ConfigError
from transferlab.outputs import check_output_path

logger = logging.getLogger(__name__)

# The 15 corruptions of the benchmark, in the paper's order (noise, blur, weather, digital).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
ALIASES = {"jpeg": "jpeg_compression"}  # the toolkit's earlier name
PRESETS = ("auto", "cifar", "imagenet")
SMALL_SIDE = 64  # "auto": images whose larger side is at most this get CIFAR-10-C's parameters

# Severity 1..5 parameters: {kind: (CIFAR-10-C, ImageNet-C)}, the released code's constants.
_PARAMS = {
    "gaussian_noise": ([0.04, 0.06, .08, .09, .10], [.08, .12, 0.18, 0.26, 0.38]),  # std on [0, 1] pixels
    "shot_noise": ([500, 250, 100, 75, 50], [60, 25, 12, 5, 3]),  # Poisson rate: x' = Poisson(x c) / c
    "impulse_noise": ([.01, .02, .03, .05, .07], [.03, .06, .09, 0.17, 0.27]),  # salt-and-pepper amount
    "defocus_blur": ([(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],  # (disk radius, alias blur)
                     [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]),
    "glass_blur": ([(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # (sigma, delta, its)
                   [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]),
    "motion_blur": ([(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],  # (radius, sigma)
                    [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]),
    "zoom_blur": ([np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                   np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
                  [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                   np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]),
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    "snow": ([(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
              (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
             [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
              (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]),
    "frost": ([(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],  # (image weight, frost weight)
              [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]),
    "fog": ([(.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)],  # (fog strength, plasma wibble decay)
            [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)]),
    "brightness": ([.05, .1, .15, .2, .3], [.1, .2, .3, .4, .5]),  # added to HSV value
    "contrast": ([.75, .5, .4, .3, 0.15], [.4, .3, .2, .1, .05]),  # factor towards the per-channel mean
    # (alpha, sigma, affine shift) as multiples of the image size (CIFAR: 32; ImageNet-C writes 244)
    "elastic_transform": ([(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                           (0.1, 0.03, 0.03)],
                          [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                           (0.12, 0.01, 0.02)]),
    "pixelate": ([0.95, 0.9, 0.85, 0.75, 0.65], [0.6, 0.5, 0.4, 0.3, 0.25]),  # downscale factor (BOX both ways)
    "jpeg_compression": ([80, 65, 58, 50, 40], [25, 18, 15, 10, 7]),  # JPEG quality
    "blur": ([.4, .6, 0.7, .8, 1], [1, 2, 3, 4, 6]),  # gaussian_blur's sigma in pixels
}
_ELASTIC_SIZE = {"cifar": 32, "imagenet": 244}  # the size the paper's elastic constants multiply ...
_PAPER_SIZE = {"cifar": 32, "imagenet": 224}  # ... at this image size
KINDS = CORRUPTIONS + ("blur",) + tuple(ALIASES)  # what `--kind` accepts
_LOGGED = 5  # skipped files warned about one by one; the rest in one summary line


def params_for(kind: str, severity: int, preset: str) -> object:
    """The published parameter of `kind` at `severity` for preset "cifar" or "imagenet"."""
    return _PARAMS[ALIASES.get(kind, kind)][0 if preset == "cifar" else 1][severity - 1]


def preset_for(img: Image.Image, params: str = "auto") -> str:
    """"cifar" or "imagenet": `params` itself, or for "auto" by the image's larger side (<= SMALL_SIDE: cifar)."""
    if params != "auto":
        return params
    return "cifar" if max(img.size) <= SMALL_SIDE else "imagenet"


# ---- the corruptions: x is an (H, W, 3) float array in [0, 1]; each returns one (clipping is done after) ------
def _f(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _gaussian_noise(img, c, rng, preset):
    x = _f(img)
    return x + rng.normal(size=x.shape, scale=c)


def _shot_noise(img, c, rng, preset):
    return rng.poisson(_f(img) * c) / c


def _impulse_noise(img, c, rng, preset):
    """skimage's random_noise(mode='s&p', amount=c): each value (pixel and channel) is replaced with probability
    c, by 1 or 0 with equal odds."""
    x = _f(img).copy()
    flipped = rng.random(x.shape) < c
    salted = rng.random(x.shape) < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return x


def _gauss_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """OpenCV's getGaussianKernel(size, sigma)."""
    r = np.arange(size) - (size - 1) / 2
    k = np.exp(-r ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The paper's anti-aliased disk: a binary disk of `radius` (on a grid of at least 17 x 17), normalised, then
    a 3 x 3 (5 x 5 above radius 8) Gaussian blur of sigma `alias_blur` with reflect-101 borders."""
    if radius <= 8:
        grid, size = np.arange(-8, 8 + 1), 3
    else:
        grid, size = np.arange(-radius, radius + 1), 5
    X, Y = np.meshgrid(grid, grid)
    disk = ((X ** 2 + Y ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = _gauss_kernel_1d(size, alias_blur)
    disk = ndimage.correlate1d(disk, g, axis=0, mode="mirror")
    return ndimage.correlate1d(disk, g, axis=1, mode="mirror")


def _defocus_blur(img, c, rng, preset):
    x = _f(img)
    kernel = disk_kernel(*c)
    return np.stack([ndimage.correlate(x[..., d], kernel, mode="mirror") for d in range(3)], axis=-1)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian on an (H, W, 3) image: per channel, 'nearest' borders, truncated at 4 sigma."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def _glass_blur(img, c, rng, preset):
    sigma, delta, iterations = c
    x = (_gaussian(_f(img).astype(np.float64), sigma) * 255).astype(np.uint8)
    h_size, w_size = x.shape[:2]
    rows = range(h_size - delta, delta, -1)
    cols = range(w_size - delta, delta, -1)
    for _ in range(iterations):
        shifts = rng.integers(-delta, delta, size=(len(rows), len(cols), 2))  # the paper's randint(-d, d)
        for i, h in enumerate(rows):
            for j, w in enumerate(cols):
                dx, dy = shifts[i, j]
                # The released code's "swap" aliases a numpy view: it copies the neighbour's pixel into (h, w).
                x[h, w] = x[h + dy, w + dx]
    return _gaussian(x / 255.0, sigma)


def motion_kernel_offsets(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """ImageMagick's MotionBlurImage kernel: (weights (n,), integer offsets (n, 2) as (dx, dy)). n = 2 ceil(r) + 1
    taps along the direction `angle` (degrees), weight exp(-i^2 / 2 sigma^2) for tap i, normalised; each tap at
    the nearest pixel of i (cos a, sin a)."""
    n = int(2 * np.ceil(radius) + 1)
    i = np.arange(n, dtype=np.float64)
    weights = np.exp(-(i ** 2) / (2 * sigma ** 2))
    weights /= weights.sum()
    a = np.deg2rad(angle)
    dx = np.ceil(i * np.cos(a) - 0.5).astype(int)
    dy = np.ceil(i * np.sin(a) - 0.5).astype(int)
    return weights, np.stack([dx, dy], axis=1)


def motion_blur_array(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """out(y, x) = sum_i w_i in(y + dy_i, x + dx_i), borders clamped (ImageMagick's default edge pixels).
    x: (H, W) or (H, W, C)."""
    weights, offsets = motion_kernel_offsets(radius, sigma, angle)
    pad = int(np.abs(offsets).max())
    h, w = x.shape[:2]
    padded = np.pad(x, [(pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 2), mode="edge")
    out = np.zeros_like(x, dtype=np.float64)
    for wt, (dx, dy) in zip(weights, offsets):
        out += wt * padded[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    return out


def _motion_blur(img, c, rng, preset):
    angle = rng.uniform(-45, 45)
    return motion_blur_array(_f(img).astype(np.float64), c[0], c[1], angle)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The paper's clipped_zoom: the central 1/factor crop, zoomed by `factor` (bilinear), trimmed to the size."""
    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    z = ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor) + (1,) * (x.ndim - 2), order=1)
    trim_top, trim_left = (z.shape[0] - h) // 2, (z.shape[1] - w) // 2
    return z[trim_top:trim_top + h, trim_left:trim_left + w]


def _zoom_blur(img, c, rng, preset):
    x = _f(img)
    out = np.zeros_like(x)
    for factor in c:
        out += clipped_zoom(x, factor)
    return (x + out) / (len(c) + 1)


def _gray(x: np.ndarray) -> np.ndarray:
    return (x @ np.array([0.299, 0.587, 0.114], dtype=x.dtype))[..., None]  # OpenCV's RGB2GRAY


def _snow(img, c, rng, preset):
    loc, scale, zoom, threshold, radius, sigma, blend = c
    x = _f(img)
    layer = rng.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64)  # the released code's 8-bit PNG
    layer = np.round(motion_blur_array(layer, radius, sigma, rng.uniform(-135, -45))) / 255.0
    layer = layer[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2)


def frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural frost-like texture, (h, w, 3) in [0, 1]: NOT the paper's frost photographs (not available
    here). Fine plasma noise for the haze, plus a few hundred thin bright ice needles (random short line segments,
    blurred a little), tinted bluish white. Mean brightness ~0.35-0.45, like the photographs' crops."""
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    haze = plasma_fractal(size, 1.3, rng)[:h, :w]
    needles = np.zeros((h, w))
    count = max(8, int(h * w / 40))
    ys, xs = rng.uniform(0, h, count), rng.uniform(0, w, count)
    angles = rng.uniform(0, np.pi, count)
    lengths = rng.uniform(2, max(3.0, min(h, w) / 6), count)
    for y0, x0, a, length in zip(ys, xs, angles, lengths):
        t = np.linspace(0, length, int(length * 2) + 2)
        yy = np.clip((y0 + t * np.sin(a)).astype(int), 0, h - 1)
        xx = np.clip((x0 + t * np.cos(a)).astype(int), 0, w - 1)
        needles[yy, xx] += 1.0
    needles = ndimage.gaussian_filter(np.clip(needles, 0, 1), 0.5)
    tex = np.clip(0.55 * haze + 0.9 * needles / max(needles.max(), 1e-6) * 0.8, 0, 1)
    tint = np.array([0.85, 0.93, 1.0])
    return tex[..., None] * tint


def _frost(img, c, rng, preset):
    x = _f(img)
    return c[0] * x + c[1] * frost_texture(x.shape[0], x.shape[1], rng)


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """The paper's diamond-square plasma fractal: a (mapsize, mapsize) map in [0, 1]; mapsize a power of two.
    (Its random offsets are wibble * U(-wibble, wibble), as in the released code.)"""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.zeros((mapsize, mapsize), dtype=np.float64)
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corner = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]  # fill squares
        square = corner + np.roll(corner, shift=-1, axis=0)
        square += np.roll(square, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]  # fill diamonds
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _fog(img, c, rng, preset):
    x = _f(img)
    h, w = x.shape[:2]
    max_val = x.max()
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    x = x + c[0] * plasma_fractal(size, c[1], rng)[:h, :w][..., None]
    return x * max_val / (max_val + c[0])


def _brightness(img, c, rng, preset):
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32) / 255.0
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return Image.fromarray((hsv * 255).round().astype(np.uint8), mode="HSV").convert("RGB")


def _contrast(img, c, rng, preset):
    x = _f(img)
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _elastic_transform(img, c, rng, preset):
    x = _f(img).astype(np.float64)
    h, w = x.shape[:2]
    unit = _ELASTIC_SIZE[preset] * min(h, w) / _PAPER_SIZE[preset]  # the paper's 244 (32) at 224 (32) px
    alpha, sigma, shift = (k * unit for k in c)
    # A random affine map moving three points around the centre by up to `shift` (cv2.getAffineTransform).
    centre = np.array([h // 2, w // 2], dtype=np.float64)
    side = min(h, w) // 3
    pts1 = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side])  # (x, y) as cv2 reads
    pts2 = pts1 + rng.uniform(-shift, shift, size=pts1.shape)
    m = np.linalg.solve(np.c_[pts1, np.ones(3)], pts2).T  # (2, 3): [x' y'] = A [x y] + b
    a_inv = np.linalg.inv(m[:, :2])
    b_inv = -a_inv @ m[:, 2]
    # warpAffine samples src(A^-1 (dst - b)); scipy wants (row, col) = (y, x) order.
    matrix = np.array([[a_inv[1, 1], a_inv[1, 0]], [a_inv[0, 1], a_inv[0, 0]]])
    offset = np.array([b_inv[1], b_inv[0]])
    x = np.stack([ndimage.affine_transform(x[..., d], matrix, offset, order=1, mode="mirror")
                  for d in range(3)], axis=-1)
    # A smooth random displacement field: uniform noise, Gaussian-filtered, times alpha.
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [yy + dy, xx + dx]
    return np.stack([ndimage.map_coordinates(x[..., d], coords, order=1, mode="reflect") for d in range(3)], -1)


def _pixelate(img, c, rng, preset):
    w, h = img.size
    small = img.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
    return small.resize((w, h), Image.BOX)


def _jpeg(img, c, rng, preset):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(c))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _blur(img, c, rng, preset):
    return img.filter(ImageFilter.GaussianBlur(radius=c))


def _to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))


_FUNCS = {"gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
          "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur,
          "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
          "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
          "jpeg_compression": _jpeg, "blur": _blur}


def corrupt_image(img: Image.Image, kind: str, severity: int, rng: np.random.Generator | None = None,
                  params: str = "auto") -> Image.Image:
    """An RGB copy of `img` with one corruption at severity 1-5, with the parameters of `params` ("cifar",
    "imagenet", or "auto": by the image's size)."""
    check(kind, severity, params)
    rng = rng if rng is not None else np.random.default_rng(0)
    img = img.convert("RGB")
    preset = preset_for(img, params)
    kind = ALIASES.get(kind, kind)
    out = _FUNCS[kind](img, params_for(kind, severity, preset), rng, preset)
    return out if isinstance(out, Image.Image) else _to_image(out)


def check(kind: str, severity: int, params: str = "auto") -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown corruption {kind!r}: choose from {', '.join(KINDS)}")
    if not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"severity must be an integer from 1 to 5, got {severity!r}")
    if params not in PRESETS:
        raise ConfigError(f"unknown corruption parameters {params!r}: choose from {', '.join(PRESETS)}")


@dataclass
class CorruptResult:
    data: str
    out: str
    kind: str
    severity: int
    seed: int
    params: str  # "auto", "cifar" or "imagenet": whose published parameters (auto: by each image's size)
    images: int  # corrupted images written
    copied: int  # other files copied unchanged
    skipped: list  # {"path": relative path, "reason": ...}: unreadable images, links out of --data, non-files

    def to_dict(self) -> dict:
        return asdict(self)


def corrupt_folder(src: str | Path, out: str | Path, kind: str, severity: int, seed: int = 0,
                   params: str = "auto") -> CorruptResult:
    """Write the corrupted copy of `src` to `out` (a new or empty folder outside `src`).

    Unreadable images (decompression bombs included) are left out of the copy, not copied as they are: a bomb
    in the output would hit the next reader. They are listed in `skipped`, with links that lead out of `src`.
    """
    from transferlab.data._images import is_image_file, read_image, unreadable_reason
    from transferlab.safe_io import atomic_write_bytes

    check(kind, severity, params)
    src, out = _check_paths(src, out)
    files, skipped = _input_files(src)  # listed in full before the first write
    out.mkdir(parents=True, exist_ok=True)
    images = copied = 0
    for rel, path in files:
        target = out / rel
        if not is_image_file(path.name):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied += 1
            continue
        try:  # the data loader's reader: our pixel limit from the header, full decode, EXIF rotation applied
            img = read_image(str(path))
        except Exception as exc:  # PIL raises many types (OSError, ValueError, SyntaxError, bomb errors)
            skipped.append({"path": rel.as_posix(), "reason": unreadable_reason(exc)})
            continue
        # Outside the try: a corruption that fails on a readable image is a bug, not a bad file.
        result = corrupt_image(img, kind, severity, _image_rng(seed, kind, severity, rel), params)
        buf = io.BytesIO()
        fmt = (Image.registered_extensions().get(path.suffix.lower()) or "PNG")
        # A lossless format keeps exactly the corrupted pixels; JPEG files are rewritten near-losslessly.
        result.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        atomic_write_bytes(target, buf.getvalue())
        images += 1
    skipped.sort(key=lambda item: item["path"])
    _log_skipped(src, skipped)
    return CorruptResult(data=str(src), out=str(out), kind=kind, severity=severity, seed=seed, params=params,
                         images=images,
                         copied=copied, skipped=skipped)


def _image_rng(seed: int, kind: str, severity: int, rel: Path) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{kind}:{severity}:{rel.as_posix()}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _check_paths(src: str | Path, out: str | Path) -> tuple[Path, Path]:
    """--data and --out, or a ConfigError before anything is written: an empty path is an unset variable (and
    Path("") is the working directory); --out must be a new or empty folder apart from --data."""
    if src is None or not str(src).strip():
        raise ConfigError("--data is empty (an unset shell variable?): give an image folder")
    src = Path(str(src)).expanduser()
    if not src.is_dir():
        raise ConfigError(f"--data {src} is not a folder of images")
    out = check_output_path(out, "--out", inputs={"--data": src})
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"--out {out} is a broken link; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; give a new or empty folder (nothing was written)")
    return src, out


def _input_files(src: Path) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """(relative path, path) of every visible regular file under `src`, sorted, and what was left out.

    Links are followed while they stay inside `src` (data sets are often linked together); a link that leads
    out of it is not: the copy would hold, and this command would read, files the user did not give.
    """
    root = os.path.realpath(src)
    files: list[tuple[Path, Path]] = []
    skipped: list[dict] = []
    stack = [(src, Path(), frozenset({root}))]  # (folder, its relative path, real paths of it and its parents)
    while stack:
        folder, rel, chain = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:  # an unreadable sub-folder costs its files, not the run
            skipped.append({"path": rel.as_posix() + "/", "reason": f"cannot list the folder ({exc.strerror})"})
            continue
        for entry in entries:
            if entry.name.startswith("."):  # hidden files and folders (.git, .ipynb_checkpoints) are no data
                continue
            path, sub = Path(entry.path), rel / entry.name
            real = os.path.realpath(path)
            if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                skipped.append({"path": sub.as_posix(), "reason": f"a link to {real}, outside --data; not followed"})
            elif entry.is_dir():
                if real in chain:
                    skipped.append({"path": sub.as_posix(), "reason": "a link to a folder that holds it; not followed"})
                else:
                    stack.append((path, sub, chain | {real}))
            elif entry.is_file():
                files.append((sub, path))
            else:  # a broken link, a FIFO (reading one would block), a socket, a device
                skipped.append({"path": sub.as_posix(), "reason": "not a regular file"})
    files.sort(key=lambda item: item[0].as_posix())
    return files, skipped


def _log_skipped(src: Path, skipped: list[dict]) -> None:
    for item in skipped[:_LOGGED]:
        logger.warning("%s: skipped %s: %s", src, item["path"], item["reason"])
    if len(skipped) > _LOGGED:
        logger.warning("%s: skipped %d more file(s); the result lists them all", src, len(skipped) - _LOGGED)
