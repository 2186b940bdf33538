"""Image folders: the real hymenoptera set, split layouts, preprocessing and layout errors."""
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from transferlab.data import DataError, DataOptions, load_data


def test_hymenoptera_counts_and_items(hymenoptera, image_cfg):
    bundle = load_data(str(hymenoptera), image_cfg, DataOptions(image_size=32))
    assert bundle.summary() == {"kind": "image", "classes": ["ants", "bees"], "train": 245, "val": 153,
                                "test": None, "skipped": 0}
    assert bundle.source == str(hymenoptera)
    for ds in (bundle.train, bundle.val):  # each label is the image's class folder
        assert all(Path(p).parent.name == bundle.classes[t] for p, t in zip(ds.paths, ds.targets))
    assert Counter(bundle.train.targets) == {0: 124, 1: 121}
    loader = DataLoader(bundle.val, batch_size=3, shuffle=False, collate_fn=bundle.collate)
    batch = next(iter(loader))  # decodes 3 images only
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == bundle.val.targets[:3]


def test_hymenoptera_max_train_is_stratified_and_deterministic(hymenoptera, image_cfg):
    opts = DataOptions(image_size=32, max_train=20, seed=1)
    a = load_data(str(hymenoptera), image_cfg, opts)
    b = load_data(str(hymenoptera), image_cfg, opts)
    c = load_data(str(hymenoptera), image_cfg, DataOptions(image_size=32, max_train=20, seed=2))
    full = load_data(str(hymenoptera), image_cfg, DataOptions(image_size=32))
    assert a.train.paths == b.train.paths and a.train.paths != c.train.paths
    assert len(a.train) == 20 and Counter(a.train.targets) == {0: 10, 1: 10}
    assert set(a.train.paths) <= set(full.train.paths)
    assert len(a.val) == 153  # only training is subsampled
    big = load_data(str(hymenoptera), image_cfg, DataOptions(image_size=32, max_train=10_000))
    assert len(big.train) == 245


def test_preprocessing_follows_the_model_config(tmp_path, image_tree, image_cfg):
    """Eval items equal Resize(int(size / crop_pct), interpolation) + CenterCrop + Normalize."""
    root = image_tree(tmp_path / "d", {"a": 3, "b": 3}, size=(40, 30))
    bundle = load_data(str(root), image_cfg, DataOptions(image_size=16))
    expected = T.Compose([T.Resize(int(16 / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(16),
                          T.ToTensor(), T.Normalize(image_cfg.mean, image_cfg.std)])
    path = bundle.val.paths[0]
    assert torch.allclose(bundle.val[0][0], expected(Image.open(path).convert("RGB")), atol=1e-6)
    assert bundle.train[0][0].shape == (3, 16, 16)


def test_default_size_comes_from_the_config(tmp_path, image_tree, image_cfg):
    root = image_tree(tmp_path / "d", {"a": 2, "b": 2})
    bundle = load_data(str(root), image_cfg)
    assert bundle.val[0][0].shape == (3, image_cfg.input_size, image_cfg.input_size)


def test_augment_changes_train_items_only(tmp_path, image_tree, image_cfg):
    root = image_tree(tmp_path / "d", {"a": 5, "b": 5}, size=(40, 30))
    bundle = load_data(str(root), image_cfg, DataOptions(image_size=16, augment=True))
    torch.manual_seed(0)
    views = [bundle.train[0][0] for _ in range(4)]
    assert all(v.shape == (3, 16, 16) for v in views)
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(bundle.val[0][0], bundle.val[0][0])


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "dev"])
def test_validation_split_aliases(tmp_path, image_tree, image_cfg, val_name):
    image_tree(tmp_path / "train", {"cat": 3, "dog": 2})
    image_tree(tmp_path / val_name, {"cat": 1, "dog": 2})
    image_tree(tmp_path / "test", {"dog": 1})
    bundle = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (5, 3, 1)
    assert bundle.classes == ["cat", "dog"] and bundle.test.targets == [1]


def test_train_only_is_split_by_val_fraction(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path / "train", {"a": 10, "b": 5})
    bundle = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, val_fraction=0.4))
    assert Counter(bundle.val.targets) == {0: 4, 1: 2}
    assert not set(bundle.train.paths) & set(bundle.val.paths)


def test_single_tree_is_split_stratified_and_seeded(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path, {"x": 10, "y": 10, ".ipynb_checkpoints": 1})  # hidden folders are no class
    a = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, val_fraction=0.3, seed=4))
    b = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8, val_fraction=0.3, seed=4))
    assert a.classes == ["x", "y"]
    assert (len(a.train), len(a.val)) == (14, 6) and Counter(a.val.targets) == {0: 3, 1: 3}
    assert a.val.paths == b.val.paths


def test_unlabelled_test_folder_is_ignored(tmp_path, image_tree, save_image, image_cfg):
    image_tree(tmp_path / "train", {"a": 2, "b": 2})
    save_image(tmp_path / "test" / "0001.png")
    assert load_data(str(tmp_path), image_cfg, DataOptions(image_size=8)).test is None


def test_datasets_and_collate_pickle_for_worker_processes(tmp_path, image_tree, image_cfg):
    bundle = load_data(str(image_tree(tmp_path, {"a": 2, "b": 2})), image_cfg, DataOptions(image_size=8))
    clone = pickle.loads(pickle.dumps((bundle.train, bundle.collate)))
    assert clone[1]([clone[0][0]])["pixel_values"].shape == (1, 3, 8, 8)


# --- layout errors: one DataError line naming the path -------------------------------------------

def _raises(path, cfg, match):
    with pytest.raises(DataError, match=match) as info:
        load_data(str(path), cfg, DataOptions(image_size=8))
    assert "\n" not in str(info.value)


def test_missing_path(tmp_path, image_cfg):
    _raises(tmp_path / "nope", image_cfg, "no such file or folder")


def test_folder_without_images(tmp_path, image_cfg):
    _raises(tmp_path, image_cfg, "no class folders and no images")


def test_empty_class_folder_is_named(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path / "train", {"a": 2, "b": 2})
    (tmp_path / "train" / "c").mkdir()
    (tmp_path / "train" / "c" / "notes.txt").write_text("not an image")
    _raises(tmp_path, image_cfg, r"class folder .*train/c holds no images")


def test_one_class_only(tmp_path, image_tree, image_cfg):
    _raises(image_tree(tmp_path, {"a": 3}), image_cfg, "one class only")


def test_val_class_missing_from_training(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path / "train", {"a": 2, "b": 2})
    image_tree(tmp_path / "val", {"a": 1, "zebra": 1})
    _raises(tmp_path, image_cfg, "training lacks: zebra")


def test_images_without_class_folders(tmp_path, save_image, image_cfg):
    save_image(tmp_path / "1.png")
    _raises(tmp_path, image_cfg, "no class folders")


def test_val_without_train(tmp_path, image_tree, image_cfg):
    image_tree(tmp_path / "val", {"a": 1, "b": 1})
    _raises(tmp_path, image_cfg, "no train/ folder")


def test_unknown_format_and_single_image(tmp_path, save_image, image_cfg):
    (tmp_path / "data.docx").write_bytes(b"PK")
    _raises(tmp_path / "data.docx", image_cfg, "unknown file format .docx")
    _raises(save_image(tmp_path / "one.png"), image_cfg, "single image")


def test_image_folder_with_a_text_model(tmp_path, image_tree, text_cfg):
    _raises(image_tree(tmp_path, {"a": 1, "b": 1}), text_cfg, "holds image data")


def test_files_without_an_image_extension_are_reported(tmp_path, image_tree, image_cfg, caplog):
    image_tree(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "IMG_0001.HEIC").write_bytes(b"\0")
    with caplog.at_level("WARNING", logger="transferlab.data"):
        bundle = load_data(str(tmp_path), image_cfg, DataOptions(image_size=8))
    assert len(bundle.train) + len(bundle.val) == 4
    assert any("ignored 1 file(s) without an image extension (.heic: 1)" in r.getMessage() for r in caplog.records)
