"""Common corruptions in the style of ImageNet-C (Hendrycks & Dietterich 2019), severities 1-5.

`corrupt_folder` writes a corrupted copy of an image folder with the same layout (splits, class folders,
file names) into a new or empty folder; other files are copied unchanged. Unreadable images (decompression
bombs included) and links that lead out of the folder are left out and listed. Each image's noise comes from a
generator seeded by (seed, its relative path), so a run is deterministic for a seed and independent of file
order. Severity parameters follow ImageNet-C's (for 224 px images); `blur` is its Gaussian blur.
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

from transferlab.errors import ConfigError
from transferlab.outputs import check_output_path

logger = logging.getLogger(__name__)

_SEVERITY = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],  # std of additive noise on [0, 1] pixels
    "blur": [1, 2, 3, 4, 6],  # Gaussian sigma in pixels
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],  # factor towards the image mean
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],  # added to the HSV value channel
    "jpeg": [25, 18, 15, 10, 7],  # JPEG quality
}
KINDS = tuple(_SEVERITY)
_LOGGED = 5  # skipped files warned about one by one; the rest in one summary line


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
    images: int  # corrupted images written
    copied: int  # other files copied unchanged
    skipped: list  # {"path": relative path, "reason": ...}: unreadable images, links out of --data, non-files

    def to_dict(self) -> dict:
        return asdict(self)


def corrupt_folder(src: str | Path, out: str | Path, kind: str, severity: int, seed: int = 0) -> CorruptResult:
    """Write the corrupted copy of `src` to `out` (a new or empty folder outside `src`).

    Unreadable images (decompression bombs included) are left out of the copy, not copied as they are: a bomb
    in the output would hit the next reader. They are listed in `skipped`, with links that lead out of `src`.
    """
    from transferlab.data._images import is_image_file, read_image, unreadable_reason
    from transferlab.safe_io import atomic_write_bytes

    check(kind, severity)
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
        result = corrupt_image(img, kind, severity, _image_rng(seed, kind, severity, rel))
        buf = io.BytesIO()
        fmt = (Image.registered_extensions().get(path.suffix.lower()) or "PNG")
        # A lossless format keeps exactly the corrupted pixels; JPEG files are rewritten near-losslessly.
        result.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        atomic_write_bytes(target, buf.getvalue())
        images += 1
    skipped.sort(key=lambda item: item["path"])
    _log_skipped(src, skipped)
    return CorruptResult(data=str(src), out=str(out), kind=kind, severity=severity, seed=seed, images=images,
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
