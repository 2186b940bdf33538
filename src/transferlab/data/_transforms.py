"""Image preprocessing read from the model's pretrained config (duck-typed)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

if TYPE_CHECKING:
    from transferlab.models._config import PretrainedCfg

    from ._options import DataOptions

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}
AUGMENT_SCALE = (0.6, 1.0)  # milder than ImageNet's (0.08, 1): small target sets lose less content


def image_size(cfg: PretrainedCfg, options: DataOptions) -> int:
    """Side length fed to the model: options.image_size, else cfg.input_size.

    A timm-style ``(3, H, W)`` input size is accepted too; its last entry is used.
    """
    if options.image_size is not None:
        return options.image_size
    size = getattr(cfg, "input_size", 224)
    return int(size if isinstance(size, int) else size[-1])


def interpolation(cfg: PretrainedCfg) -> InterpolationMode:
    name = str(getattr(cfg, "interpolation", "bicubic")).lower()
    if name not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {name!r} in the model config; expected one of {sorted(_INTERPOLATION)}")
    return _INTERPOLATION[name]


def resize_size(size: int, cfg: PretrainedCfg) -> int:
    """Shorter side before the centre crop: the crop keeps crop_pct of it (timm's convention)."""
    crop_pct = getattr(cfg, "crop_pct", None) or 1.0
    return int(size / crop_pct)


def normalize(cfg: PretrainedCfg) -> T.Normalize:
    return T.Normalize(mean=list(cfg.mean), std=list(cfg.std))


def eval_transform(size: int, cfg: PretrainedCfg) -> T.Compose:
    """PIL RGB image -> normalised (3, size, size) float tensor."""
    return T.Compose([
        T.Resize(resize_size(size, cfg), interpolation=interpolation(cfg)),
        T.CenterCrop(size),
        T.ToTensor(),
        normalize(cfg),
    ])


def train_transform(size: int, cfg: PretrainedCfg, augment: bool) -> T.Compose:
    """The eval transform, or with ``augment`` a random resized crop and a horizontal flip."""
    if not augment:
        return eval_transform(size, cfg)
    return T.Compose([
        T.RandomResizedCrop(size, scale=AUGMENT_SCALE, interpolation=interpolation(cfg)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        normalize(cfg),
    ])
