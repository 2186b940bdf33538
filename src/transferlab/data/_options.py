"""DataOptions: what the user may change about how a data set is read and split."""
from __future__ import annotations

from dataclasses import dataclass, field

from ._errors import DataError

MAX_IMAGE_SIZE = 1024  # pixels a side: 12 MB of float32 per image and far more per activation map


@dataclass
class DataOptions:
    """How to read, split and preprocess a data set. Every field has a default and a help text
    (``dataclasses.fields(DataOptions)[i].metadata["help"]``), so the CLI can build its flags."""

    val_fraction: float = field(
        default=0.2,
        metadata={"help": "Fraction of the training data held out for validation when the data set "
                          "has no validation split (stratified by class, seeded)."},
    )
    test_fraction: float | None = field(
        default=None,
        metadata={"help": "When the data set has no test split, hold out this fraction of the training data as "
                          "one (stratified by class, seeded, before the validation split and --max-train): a split "
                          "that no epoch or setting is selected on, so its accuracy is unbiased. Default: none "
                          "(the bundled digits demo of `compare` uses 0.2)."},
    )
    max_train: int | None = field(
        default=None,
        metadata={"help": "Use at most this many training examples: a stratified, seeded subsample "
                          "of the training split. Default: all."},
    )
    max_val: int | None = field(
        default=None,
        metadata={"help": "Evaluate on at most this many validation examples: a stratified, seeded "
                          "subsample (SST-2's dev set has 6,735 rows). Default: all."},
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seed for the validation split and the training subsample."},
    )
    augment: bool = field(
        default=False,
        metadata={"help": "Augment training images (random resized crop with scale 0.6-1 and a "
                          "horizontal flip; digits get no flip). No effect on text or numeric vectors."},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Image side in pixels fed to the model, 8 to 1024. Default: the model's input size."},
    )
    text_column: str | None = field(
        default=None,
        metadata={"help": "Name of the text column (default: 'sentence' or 'text'); "
                          "a 0-based column index with no_header (default 0)."},
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Name of the label column (default: 'label'); "
                          "a 0-based column index with no_header (default 1)."},
    )
    no_header: bool = field(
        default=False,
        metadata={"help": "Text files have no header row: columns are given by index "
                          "(JSONL rows are then arrays)."},
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Truncate texts to this many tokens. Default: the model's max length."},
    )
    classes: str | None = field(
        default=None,
        metadata={"help": "Comma-separated class names to keep (image folders: class folder names; digits: 0-9; "
                          "text and .npz files: label values; sklearn:NAME: its class names); the others are left "
                          "out of every split, and the kept ones are indexed as if the others did not exist. "
                          "Default: all."},
    )

    def __post_init__(self) -> None:
        # Checked here once, so every reader can trust the values.
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 < self.val_fraction < 1:
            raise DataError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction!r}")
        if self.test_fraction is not None and (isinstance(self.test_fraction, bool)
                                               or not isinstance(self.test_fraction, (int, float))
                                               or not 0 < self.test_fraction < 1):
            raise DataError(f"--test-fraction must be between 0 and 1 (exclusive), got {self.test_fraction!r}")
        _check_int("max_train", self.max_train, 1)
        _check_int("max_val", self.max_val, 1)
        _check_int("seed", self.seed, None, optional=False)
        # at most MAX_IMAGE_SIZE: one 30,000-pixel image is 10 GB of floats, and the kernel kills the process
        # (no MemoryError to catch) before a batch is built (found by tests/reliability/test_fuzz.py)
        _check_int("image_size", self.image_size, 8, maximum=MAX_IMAGE_SIZE)
        _check_int("max_length", self.max_length, 4)
        if self.no_header:
            for name in ("text_column", "label_column"):
                value = getattr(self, name)
                if value is not None and not (str(value).isdigit() and str(value).isascii()):
                    raise DataError(f"with --no-header, {flag(name)} must be a 0-based column index like '0', "
                                    f"got {value!r}")
        if self.text_column is not None and self.text_column == self.label_column:
            raise DataError(f"--text-column and --label-column are both {self.text_column!r}; they must differ")
        self.selected_classes()  # raises on a malformed --classes

    def selected_classes(self) -> list[str] | None:
        """The names ``classes`` keeps, in the order given (surrounding spaces removed); None for all classes."""
        if self.classes is None:
            return None
        if not isinstance(self.classes, str):
            raise DataError(f"--classes must be comma-separated class names like 'cat,dog', got {self.classes!r}")
        names = [name.strip() for name in self.classes.split(",")]
        if any(not name for name in names):
            raise DataError(f"--classes {self.classes!r} has an empty name; separate class names with single commas, "
                            "e.g. 'cat,dog'")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise DataError(f"--classes names {listed(repeated)} more than once; name each class once")
        if len(names) < 2:
            raise DataError(f"--classes {self.classes!r} selects one class only; a classifier needs at least 2")
        return names


def flag(name: str) -> str:
    """A field's command-line spelling (``max_val`` -> ``--max-val``): messages name what the user typed."""
    return "--" + name.replace("_", "-")


def listed(names, limit: int = 20) -> str:
    """Names for a one-line message: quoted, comma-separated, the first ``limit`` and a count of the rest."""
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_classes_exist(selected: list[str], available: list[str], source: object, what: str = "class") -> None:
    """DataError naming the --classes names that ``source`` lacks, and the classes it has (one line)."""
    present = set(available)
    missing = [name for name in selected if name not in present]
    if missing:
        raise DataError(f"--classes: {source} has no {what} {listed(missing)}; "
                        f"its classes are {listed(available)}")


def _check_int(name: str, value: object, minimum: int | None, optional: bool = True,
               maximum: int | None = None) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{flag(name)} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DataError(f"{flag(name)} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise DataError(f"{flag(name)} must be at most {maximum}, got {value}")
