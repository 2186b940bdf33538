"""DataBundle: the splits of one data set plus what the trainer needs to batch them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

from ._errors import SkipLog


@dataclass
class DataBundle:
    """Everything ``load_data`` found.

    Dataset items are ``(x, label)``: x is a (3, H, W) float tensor (images), a str (text) or an (F,) float
    tensor (vectors, standardised with the training split's statistics);
    an image item is ``None`` when its file cannot be read. Every dataset has ``.targets``
    (list[int], for stratification); image datasets also have ``.paths``.

    ``collate`` turns a list of items into a batch dict:
    images -> {"pixel_values": (B, 3, H, W) float, "labels": (B,) long};
    text -> the tokenizer's {"input_ids", "attention_mask"[, "token_type_ids"]}: (B, T) long,
    padded to the longest text in the batch, plus "labels";
    vectors -> {"input_values": (B, F) float, "labels": (B,) long}. ``None`` items are dropped, so B can be
    smaller than the number of items, and 0 when all were dropped (skip such a batch).
    """

    kind: str  # "image", "text" or "vector"
    classes: list[str]  # sorted class names; label index i <-> classes[i]
    train: Dataset
    val: Dataset
    test: Dataset | None
    collate: Callable[[list], dict]
    skipped: SkipLog  # unreadable inputs found so far (grows while image items are read)
    source: str  # the path given, or "digits[:spec]" / "sklearn:NAME[:spec]"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        """Sizes and counts as JSON-ready data; "test" is None when there is no test split. A split counts the
        examples used: an image that passed the header check at load time but failed to decode since (it is in
        ``skipped``) is left out of its split's count. "skipped" counts every input skipped so far, at load time
        or when read."""
        return {
            "kind": self.kind,
            "classes": list(self.classes),
            "train": self._used(self.train),
            "val": self._used(self.val),
            "test": None if self.test is None else self._used(self.test),
            "skipped": self.skipped.count,
        }

    def _used(self, dataset: Dataset) -> int:
        paths = getattr(dataset, "paths", None)  # image splits; a text split holds only the rows it could read
        if paths is None or not self.skipped.count:
            return len(dataset)
        return sum(path not in self.skipped for path in paths)
