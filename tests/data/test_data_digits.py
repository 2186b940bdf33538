"""The built-in digits data set: shapes, normalisation, class subsets."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from transferlab.data import DataBundle, DataError, DataOptions, load_data


@pytest.fixture(scope="module")
def raw_digits():
    return load_digits()


def test_digits_shapes_and_normalisation(image_cfg, raw_digits):
    bundle = load_data("digits", image_cfg, DataOptions(image_size=16))
    assert isinstance(bundle, DataBundle)
    assert bundle.kind == "image" and bundle.classes == [str(d) for d in range(10)]
    summary = bundle.summary()
    assert summary["train"] + summary["val"] == 1797 and summary["test"] is None
    assert abs(summary["val"] / 1797 - 0.2) < 0.01
    x, y = bundle.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    # Undo the normalisation: 3 identical grey channels, equal to the raw scan /16 resized bilinearly.
    mean = torch.tensor(image_cfg.mean).view(3, 1, 1)
    std = torch.tensor(image_cfg.std).view(3, 1, 1)
    row = bundle.train.ids[0]
    raw = torch.tensor(raw_digits.images[row] / 16.0, dtype=torch.float32)[None, None]
    expected = F.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(x * std + mean, expected.expand(3, -1, -1), atol=1e-5)
    assert y == int(raw_digits.target[row])
    batch = bundle.collate([bundle.train[i] for i in range(5)])
    assert batch["pixel_values"].shape == (5, 3, 16, 16) and batch["labels"].dtype == torch.long


@pytest.mark.parametrize("spec, digits", [
    ("digits:0-4", [0, 1, 2, 3, 4]), ("digits:5-9", [5, 6, 7, 8, 9]),
    ("digits:0,3,7", [0, 3, 7]), ("digits:0-2,7", [0, 1, 2, 7]),
])
def test_digit_subsets_keep_names_and_renumber_labels(image_cfg, raw_digits, spec, digits):
    bundle = load_data(spec, image_cfg, DataOptions(image_size=8))
    assert bundle.classes == [str(d) for d in digits]
    for ds in (bundle.train, bundle.val):
        assert set(ds.targets) == set(range(len(digits)))
        for i in range(0, len(ds), 97):  # the label names the digit actually shown
            assert bundle.classes[ds.targets[i]] == str(raw_digits.target[ds.ids[i]])
    assert len(bundle.train) + len(bundle.val) == sum(int(t) in digits for t in raw_digits.target)


@pytest.mark.parametrize("spec", ["digits:9-5", "digits:a", "digits:3", "digits:", "digits:0-10"])
def test_bad_digit_specs_raise(image_cfg, spec):
    with pytest.raises(DataError):
        load_data(spec, image_cfg, DataOptions(image_size=8))


def test_digits_max_train_is_stratified_and_deterministic(image_cfg):
    a = load_data("digits:0-4", image_cfg, DataOptions(image_size=8, max_train=50, seed=3))
    b = load_data("digits:0-4", image_cfg, DataOptions(image_size=8, max_train=50, seed=3))
    assert a.train.ids == b.train.ids and len(a.train) == 50
    assert sorted(a.train.targets.count(c) for c in range(5)) == [10] * 5


def test_digits_augment_is_random_for_train_only(image_cfg):
    bundle = load_data("digits", image_cfg, DataOptions(image_size=16, augment=True))
    torch.manual_seed(0)
    views = [bundle.train[0][0] for _ in range(4)]
    assert all(v.shape == (3, 16, 16) for v in views)
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])


def test_digits_with_a_text_model_raise(text_cfg):
    with pytest.raises(DataError, match="image"):
        load_data("digits", text_cfg, DataOptions())
