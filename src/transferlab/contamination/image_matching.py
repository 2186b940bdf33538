"""Image matching for contamination checks: exact copies, perceptual-hash near-copies, embedding neighbours.

Finds, for each evaluation ("target") image, its nearest training ("source") image by three methods, all
exact (no approximate index) and chunked, so that CIFAR-10's 10,000 test x 50,000 train images fit in
seconds to minutes and a few hundred MB on 2 CPU cores:

    pixel_hash(rgb) -> str                       exact duplicates (sha256 of decoded pixels, shape, dtype)
    exact_matches(target_keys, source_keys)      -> first source index with the same key, or -1
    to_grey32(rgb) -> (32, 32) float32           the input of both perceptual hashes
    phash(rgb) -> int, phash_batch(grey)         64-bit DCT hash (Zauner 2010)
    dhash(rgb) -> int, dhash_batch(grey)         64-bit difference hash (Krawetz 2013)
    image_hashes(images, method)                 uint64 (N,), chunked over the images
    hamming_nearest(target, source)              nearest source hash per target: (index, distance)
    cosine_nearest(target_emb, source_emb, k)    top-k source embeddings per target: (indices, scores)
    near_copies(rgb, rng)                        the tool's own near-copies of an image (calibration)

Why not imagededup (idealo)? Its CNN method builds a dense N x N similarity matrix and fails at about
60,000 images (imagededup issues #95, #133). Its hashing methods install from PyPI without another torch
(0.3.3.post2 adds only PyWavelets; its unpinned torch/torchvision requirements are met by our pins), but
they do not fit this task: `find_duplicates` searches *within one collection* (a filename -> hex-string
dict) for all pairs within one `max_distance_threshold`; there is no target-vs-source nearest neighbour with
its distance, so test-vs-train means hashing 60,000 images into one map, discarding the train-train and
test-test pairs, and re-running per threshold to calibrate; its search runs in a process pool
(`cpu_count()` workers by default). The hashes themselves are a few lines of numpy/scipy, and exact
nearest-neighbour search on 64-bit codes is a chunked xor + popcount, so the module writes its own.

Perceptual hashes
-----------------
Both hashes start from the same grey 32 x 32 image (`to_grey32`): ITU-R BT.601 luma (0.299 R + 0.587 G +
0.114 B, the weights of PIL's "L" mode), kept in float32 (no rounding to uint8), resized with PIL's
antialiased bilinear filter when the image is not 32 x 32 already (CIFAR-10 images are).

pHash (Zauner 2010, "Implementation and Benchmarking of Perceptual Image Hash Functions", the DCT hash of
the pHash library, phash.org; also Krawetz 2011, "Looks Like It", hackerfactor.com): 2-D DCT-II of the
32 x 32 grey image (`scipy.fft.dctn`, orthonormal), the 8 x 8 block of lowest frequencies, one bit per
coefficient: coefficient > median. The DC term (0, 0) is 32 x the mean grey level: always far above the
AC median, so as a bit it is constant (imagehash keeps it: a wasted bit) and inside the median it shifts
the threshold with brightness. The pHash C library avoids it by taking the block (1..8, 1..8), which also
drops row 0 and column 0: the purely horizontal and purely vertical low frequencies, which carry much of
a 32 x 32 thumbnail's structure. Here the median is taken over the 63 AC coefficients of the (0..7, 0..7)
block and the DC bit is always 0, so the hash has 63 informative bits (distances 0..63) and is invariant
to a uniform brightness change and to a contrast change (the DCT is linear and the AC bits depend only on
the ordering of the AC coefficients), up to clipping at 0 and 255.
Bit order: coefficient (u, v) of the 8 x 8 block (u = vertical frequency) is bit 63 - (8u + v) of the int.

dHash (Krawetz 2013, "Kind of Like That", hackerfactor.com): the grey image area-averaged to 8 rows x 9
columns, one bit per horizontally adjacent pair: right > left. Invariant to brightness and contrast; it
looks at finer detail than pHash's 8 x 8 frequencies. Whether it helps is for `calibrate` to say.

Nearest neighbours
------------------
`hamming_nearest` tiles targets x sources (chunk x source_chunk), xors the uint64 codes and counts bits
(`np.bitwise_count`, numpy >= 2.0; else a 256-entry byte table), keeping a running minimum: peak extra
memory is about chunk x source_chunk x 9 bytes (37.7 MB at the defaults 256 x 16,384). Ties: the lowest
source index.

`cosine_nearest` L2-normalises each target chunk and each source chunk as it is used (the inputs are never
copied whole), multiplies them, and merges the chunk's top-k into a running top-k: it never holds a T x S
matrix. Peak extra memory: chunk x source_chunk scores (+ as many bools for the tie check) + (chunk +
source_chunk) x D normalised rows, in the input's float dtype; float32 at the defaults (1,024 x 1,024, D =
1,280): 4.2 MB + 1.0 MB + 10.5 MB, about 16 MB (measured: the process's peak RSS grows by about 50 MB, BLAS
and allocator buffers included). Ties: the lowest source index first, exactly (a row whose
k-th score is tied is re-sorted with a stable sort). This is the "flat" exact search of FAISS (Johnson,
Douze, Jegou 2019) without the library; an exact search keeps the calibrated thresholds meaningful.

Near-copies
-----------
`near_copies` makes the kinds of near-duplicate that Barz & Denzler (2020, "Do We Train on Test Data?
Purging CIFAR of Near-Duplicates", J. Imaging 6(6):41) found between CIFAR's test and training sets
(shifted, re-cropped, rescaled, recoloured, re-encoded copies of one photograph); `detect.calibrate_images`
measures on them which share each method finds and how often a stranger matches. The hashes find the
photometric and compression copies and almost none of the shifted or cropped ones; the embedding alone does
not separate copies from look-alikes; `aligned` (normalised cross-correlation over shifts and crop scales of
candidates that the embedding and thumbnails retrieve) finds all kinds: docs/contamination.md has the numbers.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

__all__ = [
    "COPY_KINDS", "HASH_METHODS", "cosine_nearest", "dhash", "dhash_batch", "exact_matches",
    "hamming_distance", "hamming_nearest", "image_hashes", "near_copies", "phash", "phash_batch", "pixel_hash",
    "to_grey32",
]

# ITU-R BT.601 luma weights, as PIL's "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_EPS = 1e-12  # L2 normalisation: a zero embedding stays zero (cosine 0 to everything)


# ---- exact duplicates ---------------------------------------------------------------------------------------
def pixel_hash(rgb: np.ndarray) -> str:
    """Exact-duplicate key: sha256 (hex) of the decoded pixels, with their shape and dtype.

    Two images get the same key exactly when their decoded arrays are equal (a JPEG re-encode is not)."""
    arr = np.ascontiguousarray(rgb)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def exact_matches(target_keys: Sequence[str], source_keys: Sequence[str]) -> np.ndarray:
    """For each target key, the lowest index of a source with the same key (`pixel_hash`), or -1; (T,) int64."""
    first: dict[str, int] = {}
    for i, key in enumerate(source_keys):
        first.setdefault(key, i)
    return np.array([first.get(key, -1) for key in target_keys], dtype=np.int64)


# ---- perceptual hashes --------------------------------------------------------------------------------------
def _check_image(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 2:
        return arr
    raise ValueError(f"expected an H x W x 3 RGB (or H x W grey) image, got shape {arr.shape}")


def to_grey32(rgb: np.ndarray) -> np.ndarray:
    """(32, 32) float32 grey image (BT.601 luma, 0..255) of an H x W x 3 RGB or H x W grey image."""
    arr = _check_image(rgb)
    grey = arr.astype(np.float32) @ _LUMA if arr.ndim == 3 else arr.astype(np.float32)  # (H, W)
    if grey.shape != (32, 32):
        grey = np.asarray(Image.fromarray(grey).resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
    return grey


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bools -> (N,) uint64, the first bit the most significant."""
    packed = np.packbits(bits.astype(np.uint8), axis=1)  # (N, 8) uint8
    return np.ascontiguousarray(packed).view(">u8").reshape(-1).astype(np.uint64)


def _check_grey_batch(grey: np.ndarray) -> np.ndarray:
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 3 or grey.shape[1:] != (32, 32):
        raise ValueError(f"expected an (N, 32, 32) grey array (see to_grey32), got shape {grey.shape}")
    return grey


def phash_batch(grey: np.ndarray) -> np.ndarray:
    """pHash of each (32, 32) grey image: (N, 32, 32) float -> (N,) uint64 (see the module docstring)."""
    grey = _check_grey_batch(grey)
    coef = scipy.fft.dctn(grey, type=2, norm="ortho", axes=(1, 2))[:, :8, :8].reshape(len(grey), 64)
    ac = coef[:, 1:]  # (N, 63): the DC term (0, 0) takes no part
    bits = np.zeros((len(grey), 64), dtype=bool)
    bits[:, 1:] = ac > np.median(ac, axis=1, keepdims=True)
    return _pack_bits(bits)


def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) area-averaging resize weights: row i averages input cells [i, i+1) * n_in / n_out."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    cells = np.arange(n_in)
    overlap = np.clip(np.minimum(edges[1:, None], cells + 1) - np.maximum(edges[:-1, None], cells), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


_ROWS_8 = _area_matrix(8, 32)  # (8, 32)
_COLS_9 = _area_matrix(9, 32)  # (9, 32)


def dhash_batch(grey: np.ndarray) -> np.ndarray:
    """dHash of each (32, 32) grey image: (N, 32, 32) float -> (N,) uint64 (see the module docstring)."""
    grey = _check_grey_batch(grey)
    small = _ROWS_8 @ grey @ _COLS_9.T  # (N, 8, 9)
    bits = small[:, :, 1:] > small[:, :, :-1]  # (N, 8, 8)
    return _pack_bits(bits.reshape(len(grey), 64))


HASH_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"phash": phash_batch, "dhash": dhash_batch}


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of one image (bit 63 - (8u + v) <- coefficient (u, v); the DC bit is 0)."""
    return int(phash_batch(to_grey32(rgb)[None])[0])


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash of one image (bit 63 - (8 row + col) <- pixel (row, col + 1) > (row, col))."""
    return int(dhash_batch(to_grey32(rgb)[None])[0])


def image_hashes(images: Iterable[np.ndarray], method: str = "phash", chunk: int = 4096) -> np.ndarray:
    """(N,) uint64 hashes of images (H x W x 3 uint8), `chunk` grey images (4 KB each) in memory at a time."""
    if method not in HASH_METHODS:
        raise ValueError(f"unknown hash method {method!r}; choose from {sorted(HASH_METHODS)}")
    fn, out, buf = HASH_METHODS[method], [], []
    for img in images:
        buf.append(to_grey32(img))
        if len(buf) == chunk:
            out.append(fn(np.stack(buf)))
            buf = []
    if buf:
        out.append(fn(np.stack(buf)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


# ---- Hamming nearest neighbour ------------------------------------------------------------------------------
_BYTE_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Bits set in each uint64 of x, as uint8 of x's shape."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x)
    return _BYTE_POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


def hamming_distance(a: int, b: int) -> int:
    """Bits in which two 64-bit hashes differ."""
    return (int(a) ^ int(b)).bit_count()


def _as_hashes(h, name: str) -> np.ndarray:
    arr = np.asarray(h)
    if arr.dtype.kind not in "iu" and arr.size:
        raise TypeError(f"{name} must hold integer hashes, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr.astype(np.uint64).reshape(-1))


def hamming_nearest(target_hashes: np.ndarray, source_hashes: np.ndarray, chunk: int = 256,
                    source_chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """For each target hash, the nearest source hash by Hamming distance: (index (T,) int64, distance (T,) int64).

    Ties go to the lowest source index. Works on chunk x source_chunk tiles: peak extra memory about
    chunk x source_chunk x 9 bytes (37.7 MB at the defaults), whatever T and S."""
    t = _as_hashes(target_hashes, "target_hashes")
    s = _as_hashes(source_hashes, "source_hashes")
    if s.size == 0:
        raise ValueError("source_hashes is empty: nothing to match against")
    if chunk < 1 or source_chunk < 1:
        raise ValueError("chunk and source_chunk must be >= 1")
    index = np.zeros(t.size, dtype=np.int64)
    distance = np.zeros(t.size, dtype=np.int64)
    for a in range(0, t.size, chunk):
        tc = t[a:a + chunk, None]  # (c, 1)
        best_d = np.full(tc.shape[0], 255, dtype=np.uint8)
        best_i = np.zeros(tc.shape[0], dtype=np.int64)
        rows = np.arange(tc.shape[0])
        for b in range(0, s.size, source_chunk):
            d = _popcount(tc ^ s[None, b:b + source_chunk])  # (c, sc) uint8
            j = d.argmin(axis=1)  # the first minimum: the lowest index within the tile
            dj = d[rows, j]
            better = dj < best_d  # strict: an earlier tile (lower indices) keeps its ties
            best_d[better] = dj[better]
            best_i[better] = j[better] + b
        index[a:a + chunk] = best_i
        distance[a:a + chunk] = best_d
    return index, distance


# ---- cosine nearest neighbours ------------------------------------------------------------------------------
def _order(scores: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (score descending, index ascending)."""
    o = torch.argsort(idx, dim=1, stable=True)
    scores, idx = scores.gather(1, o), idx.gather(1, o)
    o = torch.argsort(scores, dim=1, descending=True, stable=True)
    return scores.gather(1, o), idx.gather(1, o)


def _topk_lowest_index(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of sims (c, s), ties broken by the lowest column index, exactly."""
    vals, idx = torch.topk(sims, k, dim=1)  # which of several equal scores topk keeps is unspecified
    tied = ((sims >= vals[:, -1:]).sum(1) > k).nonzero().flatten()  # rows with a tie at the k-th place
    if tied.numel():
        sv, si = torch.sort(sims[tied], dim=1, descending=True, stable=True)
        vals[tied], idx[tied] = sv[:, :k], si[:, :k]
    return _order(vals, idx)


@torch.no_grad()
def cosine_nearest(target_emb: torch.Tensor, source_emb: torch.Tensor, k: int = 1, chunk: int = 1024,
                   source_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target embedding, the k source embeddings of highest cosine similarity.

    target_emb (T, D), source_emb (S, D) -> (indices (T, k) int64, scores (T, k)), best first; ties: the
    lowest source index first. Rows are L2-normalised (a zero row has cosine 0 to everything); inputs must be
    finite. Integer inputs are computed in float32, float inputs in their own dtype. Peak extra memory:
    chunk x source_chunk scores and bools + (chunk + source_chunk) x D normalised rows (about 16 MB for
    float32 at the defaults with D = 1,280), never T x S."""
    if target_emb.ndim != 2 or source_emb.ndim != 2 or target_emb.shape[1] != source_emb.shape[1]:
        raise ValueError(f"expected (T, D) and (S, D) embeddings, got {tuple(target_emb.shape)} and "
                         f"{tuple(source_emb.shape)}")
    n_t, n_s = target_emb.shape[0], source_emb.shape[0]
    if not 1 <= k <= n_s:
        raise ValueError(f"k must be in 1..{n_s} (the number of sources), got {k}")
    if chunk < 1 or source_chunk < 1:
        raise ValueError("chunk and source_chunk must be >= 1")
    dtype = torch.promote_types(target_emb.dtype, source_emb.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    indices = torch.empty(n_t, k, dtype=torch.long)
    scores = torch.empty(n_t, k, dtype=dtype)
    for a in range(0, n_t, chunk):
        tc = F.normalize(target_emb[a:a + chunk].to(dtype), dim=1, eps=_EPS)  # (c, D)
        best_s = torch.full((tc.shape[0], k), -torch.inf, dtype=dtype)
        best_i = torch.full((tc.shape[0], k), -1, dtype=torch.long)
        for b in range(0, n_s, source_chunk):
            sc = F.normalize(source_emb[b:b + source_chunk].to(dtype), dim=1, eps=_EPS)  # (sc, D)
            vals, idx = _topk_lowest_index(tc @ sc.T, min(k, sc.shape[0]))  # (c, sc) -> (c, k')
            best_s, best_i = _order(torch.cat([best_s, vals], 1), torch.cat([best_i, idx + b], 1))
            best_s, best_i = best_s[:, :k], best_i[:, :k]
        indices[a:a + chunk], scores[a:a + chunk] = best_i, best_s
    return indices, scores


# ---- near-copies --------------------------------------------------------------------------------------------
COPY_KINDS = ("shift", "crop", "rescale", "jitter", "jpeg", "combo", "flip")


def _shift(rgb: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved by (dy, dx) pixels; the uncovered border repeats the edge pixels."""
    h, w = rgb.shape[:2]
    m = max(abs(dy), abs(dx))
    pad = np.pad(rgb, ((m, m), (m, m), (0, 0)), mode="edge")
    return np.ascontiguousarray(pad[m - dy:m - dy + h, m - dx:m - dx + w])


def _offset(rng: np.random.Generator, most: int) -> tuple[int, int]:
    while True:
        dy, dx = (int(v) for v in rng.integers(-most, most + 1, size=2))
        if (dy, dx) != (0, 0):
            return dy, dx


def _crop_resize(rgb: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = Image.fromarray(rgb).crop((left, top, left + cw, top + ch))
    return np.asarray(img.resize((w, h), Image.Resampling.BICUBIC))


def _rescale(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    small = Image.fromarray(rgb).resize((max(1, round(w * factor)), max(1, round(h * factor))),
                                        Image.Resampling.BILINEAR)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def _jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    brightness, contrast, saturation = rng.uniform(0.75, 1.25), rng.uniform(0.75, 1.25), rng.uniform(0.6, 1.4)
    img = ImageEnhance.Brightness(Image.fromarray(rgb)).enhance(brightness)
    img = ImageEnhance.Contrast(img).enhance(contrast)
    return np.asarray(ImageEnhance.Color(img).enhance(saturation))


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def near_copies(rgb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The tool's own near-copies of one H x W x 3 uint8 image, each H x W x 3 uint8 (keys `COPY_KINDS`):

    shift    content moved by (dy, dx), each in -3..3, not both 0; the border edge-padded (a re-framed
             photograph repeats no content from the far side, as wrapping would)
    crop     a square-ratio crop of 75-90 % of each side at a random place, resized back (bicubic)
    rescale  down by a factor 0.5-0.75, then back up (bilinear): a blurred copy
    jitter   brightness x 0.75-1.25, contrast x 0.75-1.25, saturation x 0.6-1.4 (PIL ImageEnhance, in order)
    jpeg     re-encoded as JPEG at quality 30-50
    combo    shift by -2..2 px, then jitter, then JPEG at quality 40-60
    flip     mirrored left to right (no draw from rng: the other kinds are those made before it was added)

    Deterministic: the draws from rng are made in this order, so the same seed gives the same copies."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {arr.dtype} {arr.shape}")
    out = {"shift": _shift(arr, *_offset(rng, 3))}
    out["crop"] = _crop_resize(arr, float(rng.uniform(0.75, 0.9)), rng)
    out["rescale"] = _rescale(arr, float(rng.uniform(0.5, 0.75)))
    out["jitter"] = _jitter(arr, rng)
    out["jpeg"] = _jpeg(arr, int(rng.integers(30, 51)))
    combo = _jitter(_shift(arr, *_offset(rng, 2)), rng)
    out["combo"] = _jpeg(combo, int(rng.integers(40, 61)))
    out["flip"] = np.ascontiguousarray(arr[:, ::-1])
    return out
