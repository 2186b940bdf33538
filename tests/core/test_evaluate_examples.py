"""Per-example evaluation (`evaluate_examples`): entry i is example i, even when the collate function drops
unreadable items, and the totals are what `evaluate` gives on the same data."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from transferlab.data import DataOptions, load_data
from transferlab.data._images import ImageCollate
from transferlab.models._config import PretrainedCfg
from transferlab.training.evaluate import evaluate, evaluate_examples, ordered_loader


class _Coded(Dataset):
    """Item i: a (3, 2, 2) image filled with the value code[i] and label labels[i]; None where code is None."""

    def __init__(self, codes, labels):
        self.codes, self.targets = codes, labels

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, i):
        if self.codes[i] is None:
            return None
        return torch.full((3, 2, 2), float(self.codes[i])), self.targets[i]


class _ReadsCode(torch.nn.Module):
    """Predicts the class written in the pixels: logits one-hot at the pixel value."""

    def forward(self, batch):
        code = batch["pixel_values"][:, 0, 0, 0].long()  # (B,)
        return torch.nn.functional.one_hot(code, 3).float() * 5.0


def test_each_entry_is_its_own_example_around_unreadable_items():
    codes = [0, None, 1, 2, None, None, 2, 1, 0, None, 1]
    labels = [0, 1, 1, 0, 2, 2, 2, 2, 0, 1, 1]
    data = _Coded(codes, labels)
    for batch_size in (1, 2, 3, 4, 11):
        res = evaluate_examples(_ReadsCode(), data, ImageCollate(2), "cpu", batch_size)
        assert res.predictions == codes
        assert res.labels == [None if c is None else y for c, y in zip(codes, labels)]
        assert res.correct == [None if c is None else c == y for c, y in zip(codes, labels)]
        assert res.summary["n"] == 7 and res.summary["accuracy"] == pytest.approx(5 / 7)
        assert res.summary == evaluate(_ReadsCode(), ordered_loader(data, batch_size, ImageCollate(2)), "cpu")


def test_all_unreadable_gives_no_results():
    res = evaluate_examples(_ReadsCode(), _Coded([None, None], [0, 1]), ImageCollate(2), "cpu", 4)
    assert res.predictions == [None, None] and res.correct == [None, None] and res.summary["n"] == 0


def test_a_collate_that_drops_readable_items_is_refused():
    def drops_first(items):
        return ImageCollate(2)(items[1:])

    with pytest.raises(RuntimeError, match="cannot be matched"):
        evaluate_examples(_ReadsCode(), _Coded([0, 1, 2], [0, 1, 2]), drops_first, "cpu", 3)


def _truncated_jpeg(path, seed):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # passes the load-time check, fails to decode


class _MeanColour(torch.nn.Module):
    """A model whose prediction depends on the image: which colour channel has the largest mean."""

    def forward(self, batch):
        return batch["pixel_values"].mean(dim=(2, 3))  # (B, 3)


def _image_tree(folder, classes, n):
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.random.default_rng(10 * k + i).integers(0, 100, (12, 12, 3), dtype=np.uint8)
            pixels[..., (k + i) % 3] += 150  # a dominant colour that varies from image to image
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_alignment_with_a_corrupt_image_file(tmp_path):
    root = tmp_path / "data"
    _image_tree(root / "train", "abc", 3)
    _image_tree(root / "test", "abc", 3)
    _truncated_jpeg(root / "test" / "b" / "0_bad.jpg", seed=7)
    bundle = load_data(str(root), PretrainedCfg(name="t", modality="image"), DataOptions(image_size=8))
    test = bundle.test
    bad = next(i for i, p in enumerate(test.paths) if p.endswith("0_bad.jpg"))
    assert 0 < bad < len(test) - 1  # in the middle: a shift would move every later prediction

    model = _MeanColour()
    one_by_one = []
    for i in range(len(test)):
        item = test[i]
        one_by_one.append(None if item is None else int(model(bundle.collate([item])).argmax(1)))
    assert one_by_one[bad] is None and one_by_one.count(None) == 1
    # Rows read off in batch order would put example i+1's prediction at i after the bad file; the predictions
    # there are not all equal, so such a shift would show.
    assert one_by_one[bad + 2:] != one_by_one[bad + 1:-1]
    for batch_size in (2, 4, len(test)):
        res = evaluate_examples(model, test, bundle.collate, "cpu", batch_size)
        assert res.predictions == one_by_one
        assert [y for y in res.labels if y is not None] == [t for i, t in enumerate(test.targets) if i != bad]
        assert res.summary["n"] == len(test) - 1
    assert any(s["path"].endswith("0_bad.jpg") for s in bundle.skipped.to_list())
