"""Image folders in torchvision's ImageFolder layout: ``DIR/<split>/<class>/*.jpg``, or one tree
``DIR/<class>/*.jpg`` that is split by ``val_fraction``."""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._bundle import DataBundle
from ._errors import DataError, SkipLog
from ._images import MAX_PIXELS, ImageCollate, ImageDataset, check_image, is_image_file, not_regular_reason
from ._options import check_classes_exist, listed
from ._split import VAL_NAMES, holdout_split, sort_labels, stratified_subset, test_holdout
from ._transforms import eval_transform, image_size, resize_size, train_transform

if TYPE_CHECKING:
    from transferlab.models._config import PretrainedCfg

    from ._options import DataOptions

logger = logging.getLogger(__name__)

_EXTENSIONS_HINT = "jpg, jpeg, png, bmp, gif, webp, tif, tiff"


@dataclass
class _Split:
    """One split as found on disk: readable files and their class names."""

    paths: list[str]
    class_names: list[str]


def find_image_splits(root: Path) -> dict[str, Path]:
    """Map split name -> folder. Without ``train/`` the root itself is the one training tree."""
    if not (root / "train").is_dir():
        others = [name for name in (*VAL_NAMES, "test") if (root / name).is_dir()]
        if others:
            raise DataError(f"{root} has a {others[0]}/ folder but no train/ folder; "
                            f"add train/<class>/ folders, or put the class folders directly in {root}")
        return {"train": root}
    splits = {"train": root / "train"}
    found = [name for name in VAL_NAMES if (root / name).is_dir()]
    if found:
        splits["val"] = root / found[0]
        if len(found) > 1:
            logger.warning("%s: using %s/ as the validation split and ignoring %s",
                           root, found[0], ", ".join(f"{n}/" for n in found[1:]))
    if (root / "test").is_dir():
        splits["test"] = root / "test"
    return splits


def _visible(name: str) -> bool:
    # Hidden folders such as .ipynb_checkpoints would otherwise become classes.
    return not name.startswith(".")


def _images_under(folder: Path, ignored: Counter, skipped: SkipLog | None = None) -> list[str]:
    """Image files anywhere under ``folder``, sorted; other files' extensions are counted in ``ignored``; image
    names that are no regular file (a FIFO, socket or device: reading one could block) are left out and
    recorded in ``skipped``."""
    return list(_walk_images(folder, ignored, skipped))


def _walk_images(folder: Path, ignored: Counter, skipped: SkipLog | None = None):
    """Yield the image files under ``folder`` in sorted walk order (see `_images_under`)."""
    visited: set[str] = set()  # links are followed (data sets are often linked in); a link cycle must end
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filter(_visible, filenames)):
            if is_image_file(name):
                path = os.path.join(dirpath, name)
                reason = not_regular_reason(path)
                if reason is None:
                    yield path
                elif skipped is not None:
                    skipped.add(path, reason)
                else:
                    logger.warning("skipped %s: %s", path, reason)
            else:
                ignored[os.path.splitext(name)[1].lower() or "(no extension)"] += 1


def has_images(folder: Path) -> bool:
    """Whether any image file lies under ``folder``; stops at the first."""
    return next(_walk_images(folder, Counter(), SkipLog()), None) is not None


def image_files(folder: Path, skipped: SkipLog | None = None) -> list[str]:
    """Image files anywhere under ``folder`` (links followed, hidden names skipped, files that are no regular
    file recorded in ``skipped``), sorted."""
    return _images_under(folder, Counter(), skipped)


def class_folders(folder: Path) -> list[Path]:
    """The class folders of one split, sorted by name."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and _visible(d.name))


def scan_split(folder: Path, skipped: SkipLog, *, labelled_optional: bool = False,
               keep: list[str] | None = None, root: Path | None = None) -> _Split | None:
    """Find the class folders and readable images of one split.

    Unreadable files are recorded in ``skipped``. ``labelled_optional``: a folder of images without
    class folders (an unlabelled test set) is ignored with a warning instead of being an error.
    ``keep``: only these class folders are read (--classes); the others are not looked into at all.
    ``root``: the data set's folder, against which linked class folders are checked (`_check_linked_classes`).
    """
    class_dirs = class_folders(folder)
    if class_dirs and keep is not None:
        present, wanted = [d.name for d in class_dirs], set(keep)
        class_dirs = [d for d in class_dirs if d.name in wanted]
        if not class_dirs:  # as if the other folders were not there: a split with no class folders
            raise DataError(f"{folder} has none of the classes --classes selects ({listed(keep)}); "
                            f"its class folders are {listed(present)}")
    _check_linked_classes(class_dirs, folder, root if root is not None else folder)
    if not class_dirs:
        loose = [f for f in folder.iterdir() if is_image_file(f.name) and f.is_file()
                 and not_regular_reason(str(f)) is None]
        if loose and labelled_optional:
            logger.warning("%s holds images but no class folders: ignored as an unlabelled test set", folder)
            return None
        if loose:
            raise DataError(f"{folder} holds images but no class folders; put each class's images in "
                            f"its own sub-folder ({folder}/<class>/...)")
        raise DataError(f"{folder} has no class folders and no images; expected {folder}/<class>/<image>")
    paths: list[str] = []
    names: list[str] = []
    ignored: Counter = Counter()
    for class_dir in class_dirs:
        files = _images_under(class_dir, ignored, skipped)
        if not files:
            raise DataError(f"class folder {class_dir} holds no images ({_EXTENSIONS_HINT}); "
                            "add images or remove the folder")
        good = []
        for path in files:
            reason = check_image(path, MAX_PIXELS)
            if reason is None:
                good.append(path)
            else:
                skipped.add(path, reason)
        if not good:
            raise DataError(f"all {len(files)} images in class folder {class_dir} are unreadable; "
                            "replace them or remove the folder")
        paths.extend(good)
        names.extend([class_dir.name] * len(good))
    if ignored:  # e.g. .heic phone photos, which would otherwise vanish without a word
        logger.warning("%s: ignored %d file(s) without an image extension (%s); supported: %s", folder,
                       sum(ignored.values()), ", ".join(f"{ext}: {n}" for ext, n in ignored.most_common()),
                       _EXTENSIONS_HINT)
    return _Split(paths, names)


def _check_linked_classes(class_dirs: list[Path], folder: Path, root: Path) -> None:
    """Links are followed, for class folders as for image files (data sets are often linked in), but a class
    folder that is a link into the data set itself (train/link -> train/ants) would make the same images a
    second class, or put them in two splits: refused. Two links to one folder outside are refused alike. A link
    out of the data set is read, with a warning: its images are not where the data set is."""
    real_root = Path(os.path.realpath(root))
    outside: dict[Path, Path] = {}  # real target -> the first link to it
    for class_dir in class_dirs:
        if not class_dir.is_symlink():
            continue
        target = Path(os.path.realpath(class_dir))
        if target == real_root or real_root in target.parents:
            raise DataError(f"class folder {class_dir} is a link to {target}, inside the data set {root}: its "
                            f"images would be read twice, as class {class_dir.name!r} and where they lie; remove "
                            f"the link (or put a folder of its own images there)")
        if target in outside:
            raise DataError(f"class folders {outside[target]} and {class_dir} are links to the same folder "
                            f"{target}: its images would be two classes; remove one link")
        outside[target] = class_dir
    if outside:
        shown = [f"{link.name} -> {target}" for target, link in outside.items()]
        logger.warning("%s: %d class folder(s) are links out of %s, and their images are read from there: %s",
                       folder, len(shown), root, ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else ""))


def _targets(split: _Split, index: dict[str, int], folder: Path) -> list[int]:
    unknown = sorted(set(split.class_names) - set(index))
    if unknown:
        raise DataError(f"{folder} has class folder(s) that training lacks: {', '.join(unknown)}; "
                        "rename or remove them")
    return [index[name] for name in split.class_names]


def load_image_folder(root: Path, cfg: PretrainedCfg, options: DataOptions) -> DataBundle:
    skipped = SkipLog()
    folders = find_image_splits(root)
    keep = options.selected_classes()
    if keep is not None:  # before any image is read: a typo should not wait for a scan of every file
        check_classes_exist(keep, [d.name for d in class_folders(folders["train"])], folders["train"],
                            what="class folder")
    train = scan_split(folders["train"], skipped, keep=keep, root=root)
    classes = sort_labels(train.class_names)
    if len(classes) < 2:
        raise DataError(f"{folders['train']} has one class only ({classes[0]}); "
                        "a classifier needs at least 2 class folders")
    index = {name: i for i, name in enumerate(classes)}

    size = image_size(cfg, options)
    eval_side = resize_size(size, cfg)
    # Random crops may keep 60% of the area and are then resized to `size`; decode big enough for that.
    train_side = 2 * size if options.augment else eval_side
    train_all = ImageDataset(train.paths, _targets(train, index, folders["train"]),
                             train_transform(size, cfg, options.augment), skipped, min_side=train_side)
    evaluate = eval_transform(size, cfg)
    carved_test = None
    if options.test_fraction and "test" not in folders:
        rest, held_test = test_holdout(train_all.targets, options.test_fraction, options.seed, folders["train"])
        carved_test = train_all.subset(held_test).with_transform(evaluate, eval_side)
        train_all = train_all.subset(rest)

    if "val" in folders:
        val_split = scan_split(folders["val"], skipped, keep=keep, root=root)
        val = ImageDataset(val_split.paths, _targets(val_split, index, folders["val"]),
                           evaluate, skipped, min_side=eval_side)
        train_set = train_all
    else:
        kept, held = holdout_split(train_all.targets, options.val_fraction, options.seed, folders["train"])
        val = train_all.subset(held).with_transform(evaluate, eval_side)
        train_set = train_all.subset(kept)
    if options.max_train is not None:
        train_set = train_set.subset(stratified_subset(train_set.targets, options.max_train, options.seed,
                                                       option="--max-train"))

    test = carved_test
    if "test" in folders:
        test_split = scan_split(folders["test"], skipped, labelled_optional=True, keep=keep, root=root)
        if test_split is not None:
            test = ImageDataset(test_split.paths, _targets(test_split, index, folders["test"]),
                                evaluate, skipped, min_side=eval_side)

    missing = sorted(set(classes) - {classes[t] for t in val.targets})
    if missing:
        logger.warning("validation split has no images of class(es) %s", ", ".join(missing))
    return DataBundle(kind="image", classes=classes, train=train_set, val=val, test=test,
                      collate=ImageCollate(size), skipped=skipped, source=str(root))
