"""Decoded images kept once: the same tensors as decoding every time, a file decoded once however often it is
read, a changed file decoded again, random transforms still random, and a memory limit."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from transferlab.data import DataOptions, DecodedImages, load_data
from transferlab.data import _images
from transferlab.data._images import ImageDataset, is_random_transform, split_transform
from transferlab.data._transforms import eval_transform, train_transform
from transferlab.models import model_cfg


def _folder(tmp_path, n=3):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def _count_reads(monkeypatch):
    calls = []
    real = _images.read_image

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(_images, "read_image", counting)
    return calls


def test_same_tensors_and_one_decode_per_file(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    cfg = model_cfg("efficientnet_lite0")
    plain = load_data(str(root), cfg, DataOptions(image_size=32))
    store = DecodedImages()
    cached = load_data(str(root), cfg, DataOptions(image_size=32), decoded=store)
    calls = _count_reads(monkeypatch)
    for _ in range(3):  # three "epochs"
        for i in range(len(cached.train)):
            x, y = cached.train[i]
            x0, y0 = plain.train.with_decoded(None)[i]
            assert torch.equal(x, x0) and y == y0
    files = len(cached.train)
    assert len(calls) == files + 3 * files  # the cached set decoded each file once; the plain one every time


def test_a_changed_file_is_decoded_again(tmp_path):
    root = _folder(tmp_path, n=1)
    cfg = model_cfg("efficientnet_lite0")
    dataset = ImageDataset([str(root / "a" / "0.png")], [0], eval_transform(32, cfg), skipped=None,
                           decoded=DecodedImages())
    before = dataset[0][0]
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(root / "a" / "0.png")
    os.utime(root / "a" / "0.png", ns=(1, 1))  # a new modification time even on a coarse clock
    after = dataset[0][0]
    assert not torch.equal(before, after)


def test_random_transforms_run_after_the_stored_pixels(tmp_path):
    root = _folder(tmp_path, n=1)
    cfg = model_cfg("efficientnet_lite0")
    augment = train_transform(32, cfg, augment=True)
    assert is_random_transform(augment) and not is_random_transform(eval_transform(32, cfg))
    fixed, rest = split_transform(augment)
    assert fixed == []  # nothing before the random crop is stored resized: the crop sees the decoded image
    path = str(root / "a" / "0.png")
    plain = ImageDataset([path], [0], augment, skipped=None)
    cached = ImageDataset([path], [0], augment, skipped=None, decoded=DecodedImages())
    for seed in (1, 2):
        torch.manual_seed(seed)
        want = plain[0][0]
        torch.manual_seed(seed)
        assert torch.equal(cached[0][0], want)
    torch.manual_seed(1)
    one = cached[0][0]
    torch.manual_seed(2)
    assert not torch.equal(one, cached[0][0]), "the crop is still drawn per call"


def test_the_store_keeps_to_its_limit():
    store = DecodedImages(limit_bytes=3 * 100)
    for i in range(5):
        store.put(("k", i), np.zeros(100, dtype=np.uint8))
    assert store.get(("k", 0)) is None and store.get(("k", 4)) is not None
    store.put(("big",), np.zeros(301, dtype=np.uint8))
    assert store.get(("big",)) is None
