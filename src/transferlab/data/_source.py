"""Source data: a labelled data set in the source classifier's label space (for EWC and forgetting).

Source data is any data set `load_data` reads (an image folder, `digits:0-4`, ...) whose class names are
source class indices ("310", "309") or, for a 1000-class ImageNet head, ImageNet class names ("ants" and
"bees" match 310 'ant' and 309 'bee'; a trailing plural 's' is ignored). `class_map` ({"ants": 310})
overrides both.
"""
from __future__ import annotations

from transferlab.errors import ConfigError


def source_label_map(class_names: list[str], num_source_classes: int,
                     class_map: dict[str, int] | None = None, source_names: tuple[str, ...] = ()) -> list[int]:
    """Source class index for each class name of a source data set, in the data set's label order.
    `source_names`: the source head's class names when the model records them (a `pretrain` checkpoint)."""
    class_map = class_map or {}
    named = {n: i for i, n in enumerate(source_names)}
    out = []
    for name in class_names:
        if name in class_map:
            index = int(class_map[name])
        elif name in named:
            index = named[name]
        elif name.strip().isdigit():
            index = int(name)
        else:
            index = _imagenet_index(name) if num_source_classes == 1000 else None
            if index is None:
                raise ConfigError(f"source class folder {name!r} is neither a source class index nor a known "
                                  f"class name; rename it to the index (e.g. 310) or pass a class map")
        if not 0 <= index < num_source_classes:
            raise ConfigError(f"source class {name!r} -> {index} is outside the source head's "
                              f"{num_source_classes} classes")
        out.append(index)
    return out


def _imagenet_index(name: str) -> int | None:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wanted = {name.lower().replace("_", " ").strip()}
    wanted.add(next(iter(wanted)).removesuffix("s"))
    for i in range(1000):
        synonyms = {s.strip().lower() for s in info.index_to_description(i).split(",")}
        if wanted & synonyms:
            return i
    return None


def load_source_data(path: str, cfg, image_size: int | None = None, seed: int = 0, val_fraction: float = 0.2,
                     tokenizer=None):
    """A source data set read with the model's preprocessing. When the model records its source classes by name
    (a `pretrain` checkpoint) and `path` is an image folder, only those classes are read (CIFAR-10 for a model
    pre-trained on five of its classes)."""
    from pathlib import Path

    from ._load import load_data
    from ._options import DataOptions

    names = tuple(getattr(cfg, "source_classes", ()) or ())
    select = ",".join(names) if names and Path(str(path)).expanduser().is_dir() else None
    options = DataOptions(image_size=image_size, seed=seed, val_fraction=val_fraction, classes=select)
    data = load_data(path, cfg, options, tokenizer=tokenizer)
    return data


