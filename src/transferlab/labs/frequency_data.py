"""The data and weights of the high- versus low-frequency experiment (lab `frequency`, and
benchmarks/frequency_lab.py, whose docstring describes the design in full): hymenoptera's photographs as carriers of
a faint grating that alone marks the class, at 1/3 cycles per pixel (`high`: the zero crossings placed so that
every window of efficientnet_lite0's stride-2 stem sums it to zero) or 1/32 (`low`, the control); and the bundled
weights with the stem's 3x3 kernels replaced by their means (a low-pass stem: zero response at 1/3)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

MODEL = "efficientnet_lite0"
FREQUENCY = {"high": 1 / 3, "low": 1 / 32}
CLASSES = ("a", "b")
VAL_FRACTION = 0.2


def input_geometry(size: int) -> dict:
    """R (the side written), the eval crop's offset, and the stem's 'same' padding positions (crop coordinates).

    The eval transform is Resize(int(S / crop_pct)) then CenterCrop(S) (transferlab.data._transforms); torchvision's
    centre crop starts at int(round((R - S) / 2)). timm's Conv2dSame (k=3, stride 2) pads
    max((ceil(S / 2) - 1) * 2 + 3 - S, 0) pixels, the smaller half before."""
    from transferlab.data._transforms import resize_size
    from transferlab.models import model_cfg

    cfg = model_cfg(MODEL)
    side = resize_size(size, cfg)
    pad = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
    before, after = pad // 2, pad - pad // 2
    padded = list(range(-before, 0)) + list(range(size, size + after))
    return {"crop_pct": cfg.crop_pct, "side": side, "offset": round((side - size) / 2.0), "padded": padded,
            "interpolation": cfg.interpolation}


def grating_levels(target: str, size: int, geo: dict, amplitude: float, sign: int, phase: float) -> np.ndarray:
    """Integer pixel levels of the 1-D grating over the written side R (indexed in written-image coordinates)."""
    u = np.arange(geo["side"]) - geo["offset"]  # crop coordinates
    level = 255.0 * amplitude
    if target == "high":  # zero crossing on the stem's padding: every stride-2 3-tap window sums to exactly 0
        anchor = geo["padded"][-1] if geo["padded"] else size
        if any((p - anchor) % 3 for p in geo["padded"]):
            logger.warning("image size %d: the stem pads at %s, which no period-3 grating zero covers; the low-pass "
                           "stem leaks the label on the border", size, geo["padded"])
        return sign * np.rint(level * np.sin(2 * np.pi * (u - anchor) / 3)).astype(np.int16)
    return np.rint(level * np.sin(2 * np.pi * FREQUENCY[target] * u + phase)).astype(np.int16)


def carrier(path: Path, side: int, margin: int) -> np.ndarray:
    """The photograph resized and centre-cropped to side x side, its levels compressed to [margin, 255 - margin]."""
    with Image.open(path) as img:
        img = ImageOps.fit(ImageOps.exif_transpose(img).convert("RGB"), (side, side), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float64)
    return np.rint(margin + arr * (255 - 2 * margin) / 255).astype(np.int16)


def with_grating(base: np.ndarray, levels: np.ndarray, cls: str) -> np.ndarray:
    """Class a: vertical stripes (levels vary along x); class b: horizontal stripes (along y)."""
    g = levels[None, :] if cls == "a" else levels[:, None]
    out = base + g[:, :, None]
    assert out.min() >= 0 and out.max() <= 255, "grating clipped"
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------------------------- data
def build_data(out: Path, size: int, amplitude: float, max_images: int | None, carriers: Path,
               targets: tuple[str, ...] = tuple(FREQUENCY)) -> tuple[dict, dict]:
    """OUT/data/<target>/{train,val,test}/<class>/*.png and OUT/data/manifest.json from the photographs of
    `carriers` (hymenoptera: train/ and val/, the latter becoming test/); returns (manifest, geometry)."""
    data = out / "data"
    manifest_file = data / "manifest.json"
    geo = input_geometry(size)
    params = {"image_size": size, "amplitude": amplitude, "max_images": max_images, "side": geo["side"],
              "targets": list(targets)}
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        if manifest["params"] != params:
            raise ConfigError(f"{data} was written with {manifest['params']}, not {params}: use another --out")
        return manifest, geo
    rng = np.random.default_rng(0)
    pools = {}
    for name, folder in (("train", "train"), ("test", "val")):
        files = sorted((carriers / folder).glob("*/*.jpg"))
        if max_images is not None and max_images < len(files):
            files = sorted(rng.choice(files, max_images, replace=False).tolist())
        pools[name] = files
    margin = math.ceil(255 * amplitude) + 1
    images = []
    for pool, files in pools.items():
        order = rng.permutation(len(files))
        labels = np.empty(len(files), dtype=object)
        labels[order[: (len(files) + 1) // 2]] = "a"
        labels[order[(len(files) + 1) // 2:]] = "b"
        split = np.full(len(files), pool, dtype=object)
        if pool == "train":  # a fixed, stratified validation split carved from hymenoptera's train/
            for cls in CLASSES:
                idx = np.flatnonzero(labels == cls)
                split[rng.choice(idx, max(1, round(VAL_FRACTION * len(idx))), replace=False)] = "val"
        for i, path in enumerate(files):
            images.append({"split": str(split[i]), "class": str(labels[i]), "source": str(path.relative_to(carriers)),
                           "name": f"{path.parent.name}_{path.stem}.png", "sign": int(rng.choice([-1, 1])),
                           "phase": float(rng.uniform(0, 2 * np.pi))})
    logger.info("writing %d images x %d targets at %d px to %s", len(images), len(targets), geo["side"], data)
    for item in images:
        base = carrier(carriers / item["source"], geo["side"], margin)
        for target in targets:
            dest = data / target / item["split"] / item["class"] / item["name"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            levels = grating_levels(target, size, geo, amplitude, item["sign"], item["phase"])
            Image.fromarray(with_grating(base, levels, item["class"])).save(dest, format="PNG")
    counts = {s: {c: sum(1 for m in images if m["split"] == s and m["class"] == c) for c in CLASSES}
              for s in ("train", "val", "test")}
    manifest = {"params": params, "margin": margin, "geometry": geo, "counts": counts, "images": images}
    manifest_file.write_text(json.dumps(manifest, indent=1))
    return manifest, geo


# ---------------------------------------------------------------------------------------------- weights
def write_weights(out: Path) -> dict[str, Path]:
    """OUT/weights/: the bundled weights unchanged, and with the stem's kernels replaced by their 3x3 means."""
    import torch
    from safetensors.torch import save_file

    from transferlab.models.timm_models import efficientnet_lite0_state_dict

    folder = out / "weights"
    files = {"original": folder / "efficientnet_lite0.safetensors",
             "lowpass": folder / "efficientnet_lite0_lowpass.safetensors"}
    if all(f.exists() for f in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in efficientnet_lite0_state_dict().items()}
    save_file(state, str(files["original"]))
    w = state["conv_stem.weight"]
    assert tuple(w.shape) == (32, 3, 3, 3), w.shape
    low = dict(state)
    low["conv_stem.weight"] = (w.mean(dim=(2, 3), keepdim=True) * torch.ones_like(w)).contiguous()
    save_file(low, str(files["lowpass"]))
    return files
