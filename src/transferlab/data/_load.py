"""load_data: one entry point that recognises the kind of data set from the path."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._bundle import DataBundle
from ._digits import is_digits_spec, load_digits_data
from ._errors import DataError
from ._image_folder import load_image_folder
from ._images import MAX_PIXELS, DecodedImages, ImageDataset, check_image, is_image_file, read_image, \
    unreadable_reason
from ._options import DataOptions
from ._split import stratified_subset
from ._text import find_text_splits, load_text
from ._text_reader import TEXT_EXTENSIONS
from ._transforms import eval_transform, image_size, resize_size
from ._vectors import NPZ_SUFFIX, is_sklearn_spec, load_vector_data

if TYPE_CHECKING:
    from transferlab.models._config import PretrainedCfg


def load_data(path: str, cfg: PretrainedCfg, options: DataOptions | None = None, tokenizer: Any = None,
              decoded: DecodedImages | None = None) -> DataBundle:
    """Read a data set and split it into train / val (/ test).

    ``path`` is one of:
      - ``"digits"`` or ``"digits:0-4"`` (a class subset): scikit-learn's bundled 8x8 digits
        (write ``./digits`` for a folder of that name);
      - ``"sklearn:wine"`` (also ``breast_cancer``, ``iris``, ``digits``; a class subset as
        ``"sklearn:digits:0-4"``) or a ``.npz`` file of arrays ``x`` (N, F) and ``y`` (N,): numeric vectors,
        standardised with the training split's statistics (``_vectors``);
      - an image folder: ``DIR/train/<class>/*`` with ``val``/``valid``/``validation``/``dev`` and
        ``test`` splits, or ``DIR/<class>/*`` split by ``options.val_fraction``;
      - a text folder with ``train.{tsv,csv,jsonl}`` (and ``dev``/``val``/... and ``test`` files),
        or a single ``.tsv``/``.csv``/``.jsonl`` file.
    ``cfg`` is the model's pretrained config (read: modality, input_size, mean, std, interpolation,
    crop_pct, max_length). ``tokenizer`` is required for text. Image files are decoded once into ``decoded``
    (a new store for this bundle when None; pass one to share it between bundles, as a grid's cells do).

    Raises DataError (one line naming the path and the fix) for anything wrong with the data.
    """
    options = options if options is not None else DataOptions()
    bundle = _load(str(path), cfg, options, tokenizer)
    if options.max_val is not None and options.max_val < len(bundle.val):
        bundle.val = bundle.val.subset(stratified_subset(bundle.val.targets, options.max_val, options.seed,
                                                         option="--max-val"))
    decoded = decoded if decoded is not None else DecodedImages()
    for split in ("train", "val", "test"):
        dataset = getattr(bundle, split)
        if isinstance(dataset, ImageDataset):
            setattr(bundle, split, dataset.with_decoded(decoded))
    return bundle


def _load(spec: str, cfg: PretrainedCfg, options: DataOptions, tokenizer: Any) -> DataBundle:
    if is_digits_spec(spec):
        _check_modality(cfg, "image", spec)
        return load_digits_data(spec, cfg, options)
    if is_sklearn_spec(spec):
        _check_modality(cfg, "vector", spec)
        return load_vector_data(spec, options)
    root = Path(spec).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder; give an image folder, a .tsv/.csv/.jsonl file, "
                        "a folder with train.tsv, a .npz file, 'digits' or 'sklearn:NAME'")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == NPZ_SUFFIX:
            _check_modality(cfg, "vector", spec)
            return load_vector_data(spec, options)
        if suffix in TEXT_EXTENSIONS:
            _check_modality(cfg, "text", spec)
            return load_text(root, cfg, options, tokenizer)
        if is_image_file(root.name):
            raise DataError(f"{root} is a single image; give the folder that holds the class folders")
        raise DataError(f"{root}: unknown file format {suffix or '(no extension)'}; use .tsv, .csv or .jsonl "
                        "for text, .npz for numeric vectors, or a folder of class folders for images")
    if find_text_splits(root) is not None:
        _check_modality(cfg, "text", spec)
        return load_text(root, cfg, options, tokenizer)
    _check_modality(cfg, "image", spec)
    return load_image_folder(root, cfg, options)


def is_builtin_spec(spec: str) -> bool:
    """``digits[:...]`` or ``sklearn:NAME[:...]``: a data set bundled with scikit-learn, not a path (write
    ``./digits`` for a folder of that name)."""
    return is_digits_spec(str(spec)) or is_sklearn_spec(str(spec))


def load_single_image(path: str, cfg: PretrainedCfg, options: DataOptions | None = None) -> torch.Tensor:
    """One image file preprocessed as the validation split is: a (3, H, W) float tensor (for predictions).

    Raises DataError when the file is missing or unreadable.
    """
    options = options if options is not None else DataOptions()
    if not Path(path).is_file():
        raise DataError(f"{path}: no such image file")
    reason = check_image(str(path), MAX_PIXELS)
    size = image_size(cfg, options)
    try:
        if reason is None:
            return eval_transform(size, cfg)(read_image(str(path), MAX_PIXELS, resize_size(size, cfg)))
    except Exception as exc:  # decoding failures of any kind: the user gave a bad file
        reason = unreadable_reason(exc)
    advice = (f"shrink it below {MAX_PIXELS:,} pixels" if reason.startswith("decompression bomb")
              else "give a jpg, png, bmp, gif, webp or tif file")
    raise DataError(f"{path}: cannot read the image ({reason}); {advice}")


def _check_modality(cfg: Any, kind: str, spec: str) -> None:
    modality = getattr(cfg, "modality", None)
    if modality is not None and modality != kind:
        name = getattr(cfg, "name", "the model")
        raise DataError(f"{spec} holds {kind} data but {name} takes {modality} inputs; "
                        f"choose a{'n' if kind == 'image' else ''} {kind} model")
