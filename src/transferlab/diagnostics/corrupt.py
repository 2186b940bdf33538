"""Common corruptions in the style of ImageNet-C (Hendrycks & Dietterich 2019), severities 1-5.

`corrupt_folder` writes a corrupted copy of an image folder with the same layout (splits, class folders,
file names); other files are copied unchanged. Each image's noise comes from a generator seeded by
(seed, its relative path), so a run is deterministic for a seed and independent of file order.
Severity parameters follow ImageNet-C's (for 224 px images); `blur` is its Gaussian blur.
"""
from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from transferlab.errors import ConfigError

_SEVERITY = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],  # std of additive noise on [0, 1] pixels
    "blur": [1, 2, 3, 4, 6],  # Gaussian sigma in pixels
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],  # factor towards the image mean
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],  # added to the HSV value channel
    "jpeg": [25, 18, 15, 10, 7],  # JPEG quality
}
KINDS = tuple(_SEVERITY)


def _gaussian_noise(img: Image.Image, c: float, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(img, dtype=np.float32) / 255.0
    return _to_image(x + rng.normal(size=x.shape, scale=c))


def _blur(img: Image.Image, c: float, rng) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=c))


def _contrast(img: Image.Image, c: float, rng) -> Image.Image:
    x = np.asarray(img, dtype=np.float32) / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return _to_image((x - means) * c + means)


def _brightness(img: Image.Image, c: float, rng) -> Image.Image:
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32) / 255.0
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return Image.fromarray((hsv * 255).round().astype(np.uint8), mode="HSV").convert("RGB")


def _jpeg(img: Image.Image, c: int, rng) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(c))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))


_FUNCS = {"gaussian_noise": _gaussian_noise, "blur": _blur, "contrast": _contrast, "brightness": _brightness,
          "jpeg": _jpeg}


def corrupt_image(img: Image.Image, kind: str, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """An RGB copy of `img` with one corruption at severity 1-5."""
    check(kind, severity)
    rng = rng if rng is not None else np.random.default_rng(0)
    return _FUNCS[kind](img.convert("RGB"), _SEVERITY[kind][severity - 1], rng)


def check(kind: str, severity: int) -> None:
    if kind not in _FUNCS:
        raise ConfigError(f"unknown corruption {kind!r}: choose from {', '.join(KINDS)}")
    if not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"severity must be an integer from 1 to 5, got {severity!r}")


@dataclass
class CorruptResult:
    data: str
    out: str
    kind: str
    severity: int
    seed: int
    images: int
    copied: int
    unreadable: list

    def to_dict(self) -> dict:
        return asdict(self)


def corrupt_folder(src: str | Path, out: str | Path, kind: str, severity: int, seed: int = 0) -> CorruptResult:
    from transferlab.data._images import is_image_file
    from transferlab.safe_io import atomic_write_bytes

    check(kind, severity)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ConfigError(f"{src} is not a folder of images")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ConfigError("--out must be outside --data")
    images = copied = 0
    unreadable = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not is_image_file(path.name):
            shutil.copyfile(path, target)
            copied += 1
            continue
        digest = hashlib.sha256(f"{seed}:{kind}:{severity}:{rel.as_posix()}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        try:
            with Image.open(path) as img:
                result = corrupt_image(img, kind, severity, rng)
        except (OSError, ValueError) as exc:  # unreadable inputs are copied as they are, and listed
            shutil.copyfile(path, target)
            unreadable.append(f"{rel}: {exc}")
            continue
        buf = io.BytesIO()
        fmt = (Image.registered_extensions().get(path.suffix.lower()) or "PNG")
        # A lossless format keeps exactly the corrupted pixels; JPEG files are rewritten near-losslessly.
        result.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        atomic_write_bytes(target, buf.getvalue())
        images += 1
    return CorruptResult(data=str(src), out=str(out), kind=kind, severity=severity, seed=seed, images=images,
                         copied=copied, unreadable=unreadable)
