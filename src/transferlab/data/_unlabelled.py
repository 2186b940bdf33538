"""Unlabelled data (a domain-adaptation target): any data set `load_data` reads, whose labels are then ignored,
or a flat folder of images with no class folders at all."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import DataError, SkipLog
from ._image_folder import class_folders
from ._images import MAX_PIXELS, DecodedImages, ImageCollate, ImageDataset, check_image, is_image_file, \
    not_regular_reason
from ._load import _check_modality, load_data
from ._options import DataOptions
from ._text import find_text_splits
from ._transforms import image_size, resize_size, train_transform

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from transferlab.models._config import PretrainedCfg

# No class: a loss that read it by mistake fails (cross-entropy refuses a negative target) instead of learning it.
NO_LABEL = -1


def load_unlabelled(path: str, cfg: PretrainedCfg, options: DataOptions | None = None, tokenizer: Any = None,
                    decoded: DecodedImages | None = None) -> tuple[Dataset, Any]:
    """(examples, collate) of unlabelled data: the training split of a data set, or every image of a flat
    folder (images directly in PATH, no class folders, no train/ split), each with the label NO_LABEL. The
    images go through the training transform of `options` (--augment included), as the labelled data does.
    DataError (one line) as `load_data` raises it."""
    options = options if options is not None else DataOptions()
    root = Path(str(path)).expanduser()
    if not is_flat_image_folder(root):
        bundle = load_data(str(path), cfg, options, tokenizer=tokenizer, decoded=decoded)
        return bundle.train, bundle.collate
    _check_modality(cfg, "image", str(path))
    skipped = SkipLog()
    files = sorted(str(f) for f in root.iterdir() if is_image_file(f.name) and not f.name.startswith("."))
    readable = []
    for file in files:
        reason = not_regular_reason(file) or check_image(file, MAX_PIXELS)
        if reason is None:
            readable.append(file)
        else:
            skipped.add(file, reason)
    if not readable:
        raise DataError(f"{root}: none of its {len(files)} images can be read")
    size = image_size(cfg, options)
    side = 2 * size if options.augment else resize_size(size, cfg)  # as the labelled training split decodes
    dataset = ImageDataset(readable, [NO_LABEL] * len(readable), train_transform(size, cfg, options.augment),
                           skipped, min_side=side, decoded=decoded if decoded is not None else DecodedImages())
    return dataset, ImageCollate(size)


def is_flat_image_folder(path: str | Path) -> bool:
    """A folder that holds image files directly and neither class folders nor a text data set."""
    root = Path(str(path)).expanduser()
    if not root.is_dir() or find_text_splits(root) is not None:
        return False
    return not class_folders(root) and any(is_image_file(f.name) and f.is_file() for f in root.iterdir())
