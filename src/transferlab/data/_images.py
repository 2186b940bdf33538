"""Reading image files safely, and the image data set and batch builder.

A data set keeps file paths; an item is decoded when it is asked for. With a `DecodedImages` store, each file is
decoded, and resized and centre-cropped where its transform starts so, once per store (a run, or every cell
of a grid); the rest of the transform (random crops, flips, the tensor conversion) runs on the stored pixels.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from ._errors import SkipLog

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Our own pixel limit, checked from the header before decoding: PIL's default (89M, an error only
# above 179M) lets one forged header allocate gigabytes. We do not change PIL's module globals.
MAX_PIXELS = 40_000_000
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


NOT_REGULAR = "not a regular file (a named pipe, socket or device: reading it could block)"


def not_regular_reason(path: str) -> str | None:
    """NOT_REGULAR when ``path`` (links followed) is a FIFO, socket or device, else None (a missing file or a
    broken link is left to the reader's own error). Checked before any ``open``: opening a FIFO blocks."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else NOT_REGULAR


def _open(fp, max_pixels: int) -> Image.Image:
    """Open from the header only, refusing decompression bombs before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(fp)
    width, height = img.size
    if width * height > max_pixels:
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height} pixels, above the limit of {max_pixels}")
    return img


def unreadable_reason(exc: BaseException) -> str:
    """Why an image could not be read, for skip lists and error messages (shared with `data corrupt`)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image that PIL can read"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb: {exc}"
    return f"{type(exc).__name__}: {exc}"


def check_image(path: str, max_pixels: int = MAX_PIXELS) -> str | None:
    """Cheap load-time check (header + ``verify()``, no decoding): None when fine, else the reason.

    verify() checks PNG chunk checksums but not JPEG scan data, so a truncated JPEG passes here
    and is caught at ``__getitem__`` time instead.
    """
    try:
        not_regular = not_regular_reason(path)
        if not_regular is not None:
            return not_regular
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as fp:
            img = _open(fp, max_pixels)
            img.verify()
    except Exception as exc:  # any failure means "unreadable"; the reason says which
        return unreadable_reason(exc)
    return None


def read_image(path: str, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image; raises on any unreadable input.

    ``min_side``: let JPEG decode at 1/2, 1/4 or 1/8 scale while both sides stay >= min_side
    (PIL's draft mode), which makes large photos several times cheaper when the model input is small.
    """
    not_regular = not_regular_reason(path)
    if not_regular is not None:  # open() on a FIFO would wait for a writer forever
        raise OSError(f"{path}: {not_regular}")
    with open(path, "rb") as fp:
        img = _open(fp, max_pixels)
        if min_side is not None:
            img.draft(None, (min_side, min_side))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()  # raises on truncated data: ImageFile.LOAD_TRUNCATED_IMAGES stays False
    try:
        img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
    except Exception as exc:  # a broken EXIF block should not cost a readable image
        logger.debug("%s: EXIF orientation ignored (%s)", path, exc)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    16-bit greyscale is scaled (65535 -> 255), not clipped as ``convert("L")`` would (32-bit "I"
    images are read in the same 0-65535 range, the range PNG and TIFF 16-bit files give); transparent
    pixels are composited on white, since their colour values are often arbitrary (black).
    """
    if img.mode in _SIXTEEN_BIT:
        values = np.asarray(img, dtype=np.float64)  # (H, W)
        img = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0  # float images in [0, 1] or [0, 255]
        img = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), mode="L")
    if img.mode in _WITH_ALPHA or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


DEFAULT_DECODED_BYTES = 2 * 2**30


class DecodedImages:
    """Decoded 8-bit RGB pixels, (H, W, 3) uint8 arrays, by (file path, size, modification time, what was applied),
    up to `limit_bytes` (least recently used dropped first). A file changed on disk gets a new key."""

    def __init__(self, limit_bytes: int = DEFAULT_DECODED_BYTES):
        self.limit_bytes = limit_bytes
        self._arrays: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> np.ndarray | None:
        array = self._arrays.get(key)
        if array is not None:
            self._arrays.move_to_end(key)
        return array

    def put(self, key: tuple, array: np.ndarray) -> None:
        if array.nbytes > self.limit_bytes:
            return
        while self._arrays and self._bytes + array.nbytes > self.limit_bytes:
            _, dropped = self._arrays.popitem(last=False)
            self._bytes -= dropped.nbytes
        self._arrays[key] = array
        self._bytes += array.nbytes


def split_transform(transform: Callable) -> tuple[list, Callable]:
    """(the leading resize and centre-crop steps of a torchvision Compose, the rest): what may be stored decoded."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if not steps:
        return [], transform
    fixed = 0
    while fixed < len(steps) and isinstance(steps[fixed], (T.Resize, T.CenterCrop)):
        fixed += 1
    return steps[:fixed], T.Compose(steps[fixed:])


def is_random_transform(transform: Callable) -> bool:
    """True when a transform (or a step of a Compose) draws random numbers: torchvision's Random* family."""
    if type(transform).__name__.startswith("Random"):
        return True
    return any(is_random_transform(step) for step in getattr(transform, "transforms", []))


class ImageDataset(Dataset):
    """Items are ``(x, label)`` with x a (3, H, W) float tensor, or ``None`` when the file cannot
    be read now (then it is recorded in ``skipped`` and the collate function drops it)."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], transform: Callable,
                 skipped: SkipLog, *, min_side: int | None = None, max_pixels: int = MAX_PIXELS,
                 decoded: DecodedImages | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = [int(t) for t in targets]
        self.transform = transform
        self.skipped = skipped
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.decoded = decoded
        self._fixed, self._rest = split_transform(transform)
        self._fixed_repr = repr(self._fixed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path = self.paths[index]
        if self.decoded is None:
            try:
                img = read_image(path, self.max_pixels, self.min_side)
            except Exception as exc:  # a bad file must not stop an epoch; it is logged once
                self.skipped.add(path, unreadable_reason(exc))
                return None
            # Outside the try: a transform error on a good image is a bug, not a bad file.
            return self.transform(img), self.targets[index]
        pixels = self._decoded(path)
        if pixels is None:
            return None
        return self._rest(Image.fromarray(pixels)), self.targets[index]

    def _decoded(self, path: str) -> np.ndarray | None:
        try:
            stat = os.stat(path)
            key = (path, stat.st_size, stat.st_mtime_ns, self.min_side, self.max_pixels, self._fixed_repr)
            pixels = self.decoded.get(key)
            if pixels is not None:
                return pixels
            img = read_image(path, self.max_pixels, self.min_side)
        except Exception as exc:
            self.skipped.add(path, unreadable_reason(exc))
            return None
        for step in self._fixed:
            img = step(img)
        pixels = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
        self.decoded.put(key, pixels)
        return pixels

    def fingerprint(self) -> str | None:
        """What the items are a function of (files, labels, transform), or None when they are random."""
        if is_random_transform(self.transform):
            return None
        digest = hashlib.sha256(f"{self.transform!r}|{self.min_side}|{self.max_pixels}".encode())
        for path, target in zip(self.paths, self.targets):
            try:
                stat = os.stat(path)
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{target}\n".encode())
            except OSError:
                digest.update(f"{path}|missing|{target}\n".encode())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        return ImageDataset([self.paths[i] for i in indices], [self.targets[i] for i in indices],
                            self.transform, self.skipped, min_side=self.min_side, max_pixels=self.max_pixels,
                            decoded=self.decoded)

    def with_transform(self, transform: Callable, min_side: int | None) -> ImageDataset:
        return ImageDataset(self.paths, self.targets, transform, self.skipped,
                            min_side=min_side, max_pixels=self.max_pixels, decoded=self.decoded)

    def with_decoded(self, decoded: DecodedImages | None) -> ImageDataset:
        return ImageDataset(self.paths, self.targets, self.transform, self.skipped, min_side=self.min_side,
                            max_pixels=self.max_pixels, decoded=decoded)


class ImageCollate:
    """``[(x, label) | None] -> {"pixel_values": (B, 3, H, W) float, "labels": (B,) long}``.

    ``None`` items (unreadable files) are dropped, so B may be smaller than the batch size; when
    every item was dropped, B == 0: "pixel_values" is (0, 3, size, size) and "labels" has size 0,
    and the caller should skip the batch. A class (not a closure) so DataLoader workers can pickle it.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def fingerprint(self) -> str:
        return f"ImageCollate({self.size})"

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        kept = [item for item in items if item is not None]
        if not kept:
            return {"pixel_values": torch.empty(0, 3, self.size, self.size),
                    "labels": torch.empty(0, dtype=torch.long)}
        return {"pixel_values": torch.stack([x for x, _ in kept]),
                "labels": torch.tensor([y for _, y in kept], dtype=torch.long)}
