"""scikit-learn's bundled digits (1,797 real 8x8 greyscale scans, classes "0".."9") as an image
data set, with an optional class subset (``digits:0-4``) for two-task and sequential-task runs."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ._bundle import DataBundle
from ._errors import DataError, SkipLog
from ._images import ImageCollate
from ._options import listed
from ._split import holdout_split, stratified_subset, test_holdout
from ._transforms import AUGMENT_SCALE, image_size

if TYPE_CHECKING:
    from transferlab.models._config import PretrainedCfg

    from ._options import DataOptions

_PART = re.compile(r"^(\d)(?:-(\d))?$")


def is_digits_spec(path: str) -> bool:
    return path == "digits" or path.startswith("digits:")


def parse_digits_spec(spec: str) -> list[int]:
    """``digits`` -> 0..9; ``digits:0-4``, ``digits:1,3,5`` or ``digits:0-2,7`` -> those digits, sorted."""
    if spec == "digits":
        return list(range(10))
    chosen: set[int] = set()
    for part in spec[len("digits:"):].split(","):
        match = _PART.match(part.strip())
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise DataError(f"{spec!r}: expected digits:A-B or digits:A,B,... with digits 0-9, e.g. digits:0-4")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        chosen.update(range(low, high + 1))
    if len(chosen) < 2:
        raise DataError(f"{spec!r} selects one class only; a classifier needs at least 2 digits")
    return sorted(chosen)


def _selected_digits(spec: str, options: DataOptions) -> list[int]:
    """The spec's digits, narrowed to --classes when given (which must then name digits the spec holds)."""
    digits = parse_digits_spec(spec)
    keep = options.selected_classes()
    if keep is None:
        return digits
    outside = [name for name in keep if name not in {str(d) for d in range(10)}]
    if outside:
        raise DataError(f"--classes: digits has no class {listed(outside)}; its classes are the digits 0-9")
    beyond = [name for name in keep if int(name) not in digits]
    if beyond:
        raise DataError(f"--classes names {listed(beyond)}, which {spec!r} leaves out (it holds "
                        f"{', '.join(map(str, digits))}); name a subset of those, or use --data digits")
    return sorted(int(name) for name in keep)


class DigitsDataset(Dataset):
    """Items ``((3, size, size) float tensor, label)``; the 8x8 scans are resized per item, since
    resizing all 1,797 up front would hold about 1 GB at size 224."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], ids: Sequence[int], size: int,
                 mean: Sequence[float], std: Sequence[float], augment: bool) -> None:
        self.images = images  # (N, 1, 8, 8) float in [0, 1]
        self.targets = [int(t) for t in targets]
        self.ids = list(ids)  # row numbers in load_digits(), so items can be traced
        self.paths = [f"digits[{i}]" for i in self.ids]
        self.size = size
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
        self.augment = augment
        # No horizontal flip: a mirrored digit is not the same digit.
        self._crop = T.RandomResizedCrop(size, scale=AUGMENT_SCALE, interpolation=InterpolationMode.BILINEAR)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index]  # (1, 8, 8)
        if self.augment:
            x = self._crop(x)
        else:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        x = x.expand(3, -1, -1)  # greyscale -> 3 identical channels, (3, size, size)
        return (x - self.mean) / self.std, self.targets[index]

    def fingerprint(self) -> str | None:
        """The scans, labels and preprocessing; None with augmentation (items are then random)."""
        if self.augment:
            return None
        digest = hashlib.sha256(f"digits|{self.size}|{self.mean.flatten().tolist()}|{self.std.flatten().tolist()}|"
                                f"{self.targets}".encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int], augment: bool | None = None) -> DigitsDataset:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return DigitsDataset(self.images[idx], [self.targets[i] for i in indices], [self.ids[i] for i in indices],
                             self.size, self.mean.flatten().tolist(), self.std.flatten().tolist(),
                             self.augment if augment is None else augment)


def load_digits_data(spec: str, cfg: PretrainedCfg, options: DataOptions) -> DataBundle:
    from sklearn.datasets import load_digits  # imported here: sklearn.datasets is slow to import

    digits = _selected_digits(spec, options)
    raw = load_digits()
    keep = [i for i, t in enumerate(raw.target) if int(t) in digits]
    renumber = {d: k for k, d in enumerate(digits)}  # digit -> label index 0..k-1
    images = torch.tensor(raw.images[keep] / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    targets = [renumber[int(raw.target[i])] for i in keep]
    size = image_size(cfg, options)
    full = DigitsDataset(images, targets, keep, size, cfg.mean, cfg.std, augment=options.augment)

    pool, test = full, None
    if options.test_fraction:
        rest, held_test = test_holdout(full.targets, options.test_fraction, options.seed, spec)
        pool, test = full.subset(rest), full.subset(held_test, augment=False)
    kept, held = holdout_split(pool.targets, options.val_fraction, options.seed, spec)
    train = pool.subset(kept)
    val = pool.subset(held, augment=False)
    if options.max_train is not None:
        train = train.subset(stratified_subset(train.targets, options.max_train, options.seed,
                                               option="--max-train"))
    return DataBundle(kind="image", classes=[str(d) for d in digits], train=train, val=val, test=test,
                      collate=ImageCollate(size), skipped=SkipLog(), source=spec)
