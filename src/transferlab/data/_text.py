"""Text classification data: one file, or a folder with train/dev/test files; batches are
tokenised on the fly with dynamic padding."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from ._bundle import DataBundle
from ._errors import DataError, SkipLog
from ._labels import unknown_label_hint, warn_about_labels
from ._options import check_classes_exist
from ._split import VAL_NAMES, holdout_split, sort_labels, stratified_subset, test_holdout
from ._text_reader import TEXT_EXTENSIONS, TextRows, read_text_file

if TYPE_CHECKING:
    from transferlab.models._config import PretrainedCfg

    from ._options import DataOptions

logger = logging.getLogger(__name__)

_TOKENIZER_KEYS = ("input_ids", "attention_mask", "token_type_ids")
_SHOWN_LABELS = 10  # unseen labels named in an error message


def find_text_file(root: Path, name: str) -> Path | None:
    """``root/name.{tsv,csv,jsonl}``; two formats of one split is ambiguous and an error."""
    found = [root / f"{name}{ext}" for ext in TEXT_EXTENSIONS if (root / f"{name}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{root} has {' and '.join(p.name for p in found)}; keep one file per split")
    return found[0] if found else None


def find_text_splits(root: Path) -> dict[str, Path] | None:
    """Split name -> file for a folder of text files, or None when it has no train file."""
    train = find_text_file(root, "train")
    if train is None:
        return None
    splits = {"train": train}
    for name in VAL_NAMES:
        val = find_text_file(root, name)
        if val is not None:
            splits["val"] = val
            break
    test = find_text_file(root, "test")
    if test is not None:
        splits["test"] = test
    return splits


class TextDataset(Dataset):
    """Items ``(text: str, label: int)``; texts are held in memory (they are small next to images).

    ``ids``: each example's 0-based data-row index in its file, as a string (``TextRows.row_ids``), the id that
    `transferlab contamination` names it by; ``file``: that file's name (``test.tsv``). Both are None for texts
    that came from no file. Neither is part of an item or of the fingerprint.
    """

    def __init__(self, texts: Sequence[str], targets: Sequence[int], ids: Sequence[int | str] | None = None,
                 file: str | None = None) -> None:
        self.texts = list(texts)
        self.targets = [int(t) for t in targets]
        self.ids = None if ids is None else [str(i) for i in ids]
        if self.ids is not None and len(self.ids) != len(self.texts):
            raise ValueError(f"{len(self.ids)} ids for {len(self.texts)} texts")
        self.file = file

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.texts[index], self.targets[index]

    def subset(self, indices: Sequence[int]) -> TextDataset:
        ids = None if self.ids is None else [self.ids[i] for i in indices]
        return TextDataset([self.texts[i] for i in indices], [self.targets[i] for i in indices], ids, self.file)

    def fingerprint(self) -> str:
        """The texts and labels, for caches keyed by what the items are."""
        digest = hashlib.sha256()
        for text, target in zip(self.texts, self.targets):
            digest.update(f"{len(text)}|{text}|{target}\n".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


class TextCollate:
    """``[(text, label) | None] -> tokenizer output (B, T) padded to the batch's longest text, + "labels" (B,)``.

    Padding per batch (not to max_length) keeps short-text batches cheap. ``None`` items are
    dropped; an empty batch gives (0, 0) "input_ids"/"attention_mask" and a size-0 "labels".
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """The tokenizer (its vocabulary, special tokens, padding side) and the maximum length."""
        if self._fingerprint is None:
            tok = self.tokenizer
            vocab = sorted(tok.get_vocab().items()) if hasattr(tok, "get_vocab") else []
            digest = hashlib.sha256(f"{type(tok).__name__}|{self.max_length}|{getattr(tok, 'padding_side', '')}|"
                                    f"{getattr(tok, 'all_special_tokens', '')}|{vocab}".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        kept = [item for item in items if item is not None]
        if not kept:
            empty = torch.empty(0, 0, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone(), "labels": torch.empty(0, dtype=torch.long)}
        encoded = self.tokenizer([text for text, _ in kept], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        batch = {key: encoded[key] for key in _TOKENIZER_KEYS if key in encoded}
        batch["labels"] = torch.tensor([label for _, label in kept], dtype=torch.long)
        return batch


def _max_length(cfg: PretrainedCfg, options: DataOptions, tokenizer: Any) -> int:
    length = options.max_length or int(getattr(cfg, "max_length", 128))
    limit = getattr(tokenizer, "model_max_length", None)
    # Hugging Face uses a huge sentinel (about 1e30) when a tokenizer has no limit.
    if isinstance(limit, int) and 0 < limit < 1_000_000 and length > limit:
        logger.info("max_length %d is above the tokenizer's limit; using %d", length, limit)
        length = limit
    return length


def _targets(rows: TextRows, index: dict[str, int], no_header: bool = False) -> list[int]:
    unknown = sort_labels(set(rows.labels) - set(index))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:_SHOWN_LABELS])
        more = f" and {len(unknown) - _SHOWN_LABELS} more" if len(unknown) > _SHOWN_LABELS else ""
        hint = unknown_label_hint(rows, unknown, index, no_header)
        raise DataError(f"{rows.path} has label(s) that training lacks: {shown}{more}{hint}; "
                        "fix them or add training examples")
    return [index[label] for label in rows.labels]


def load_text(path: Path, cfg: PretrainedCfg, options: DataOptions, tokenizer: Any) -> DataBundle:
    if tokenizer is None:
        raise DataError(f"{path} holds text, but no tokenizer was given; use a text model")
    skipped = SkipLog()
    files = find_text_splits(path) if path.is_dir() else {"train": path}
    if files is None:
        raise DataError(f"{path} has no train.tsv, train.csv or train.jsonl and no image class folders")
    train_rows = read_text_file(files["train"], options, skipped)
    keep = options.selected_classes()
    if keep is not None:
        check_classes_exist(keep, sort_labels(set(train_rows.labels) | train_rows.left_out), files["train"],
                            what="label")
    warn_about_labels(train_rows, options.no_header)
    classes = sort_labels(train_rows.labels)
    if len(classes) < 2:
        raise DataError(f"{files['train']} has one class only ({classes[0]!r}); a classifier needs at least 2 labels")
    index = {label: i for i, label in enumerate(classes)}
    train = _dataset(train_rows, index)
    carved_test = None
    if options.test_fraction and "test" not in files:
        rest, held_test = test_holdout(train.targets, options.test_fraction, options.seed, files["train"])
        train, carved_test = train.subset(rest), train.subset(held_test)

    if "val" in files:
        val = _dataset(read_text_file(files["val"], options, skipped), index, options.no_header)
    else:
        kept, held = holdout_split(train.targets, options.val_fraction, options.seed, files["train"])
        train, val = train.subset(kept), train.subset(held)
    if options.max_train is not None:
        train = train.subset(stratified_subset(train.targets, options.max_train, options.seed,
                                               option="--max-train"))
    test = carved_test
    if "test" in files:
        test = _dataset(read_text_file(files["test"], options, skipped), index, options.no_header)
    # Evaluation order does not matter, so sort by length: batches of similar lengths pad less.
    val = val.subset(_by_length(val))
    test = test.subset(_by_length(test)) if test is not None else None
    return DataBundle(kind="text", classes=classes, train=train, val=val, test=test,
                      collate=TextCollate(tokenizer, _max_length(cfg, options, tokenizer)),
                      skipped=skipped, source=str(path))


def _by_length(dataset: "TextDataset") -> list[int]:
    return sorted(range(len(dataset)), key=lambda i: len(dataset[i][0]))


def _dataset(rows: TextRows, index: dict[str, int], no_header: bool = False) -> TextDataset:
    return TextDataset(rows.texts, _targets(rows, index, no_header), rows.row_ids, rows.path.name)
