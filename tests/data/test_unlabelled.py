"""Unlabelled target data: a flat folder of images is read whole, with no label a loss could learn; any other
layout is the training split `load_data` reads; through `finetune --target-data` a flat folder trains exactly as
the same images in class folders do, since the labels are never read."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from transferlab.data import NO_LABEL, DataError, DataOptions, load_data, load_unlabelled
from transferlab.models import model_cfg


def _write_digits(folder, names: dict[str, int]) -> None:
    """Digits images (8x8 upscaled to 32x32 PNG) under `folder`, file name -> digits index."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    for name, index in names.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((images[index] * 255 / 16).astype(np.uint8)).resize((32, 32)).convert("RGB").save(path)


@pytest.fixture()
def same_images_two_layouts(tmp_path):
    """The same ten images twice: flat in flat/, and in class folders (train/a, train/b, val/a, val/b) in
    labelled/; file names chosen so both layouts list them in the same order."""
    names = {f"a_{i}.png": i for i in range(5)} | {f"b_{i}.png": 20 + i for i in range(5)}
    _write_digits(tmp_path / "flat", names)
    _write_digits(tmp_path / "labelled", {f"train/{n[0]}/{n}": i for n, i in names.items()})
    _write_digits(tmp_path / "labelled", {"val/a/v.png": 40, "val/b/v.png": 41})
    return tmp_path / "flat", tmp_path / "labelled"


def _cfg():
    return model_cfg(TINY_IMAGE_MODEL)


def test_a_flat_folder_is_every_readable_image_without_labels(same_images_two_layouts):
    flat, _ = same_images_two_layouts
    (flat / "broken.png").write_bytes(b"not an image")
    (flat / "notes.txt").write_text("ignored: no image extension")
    dataset, collate = load_unlabelled(str(flat), _cfg(), DataOptions(image_size=32))
    assert len(dataset) == 10 and set(dataset.targets) == {NO_LABEL}
    assert [p.split("/")[-1] for p in dataset.paths] == sorted(f.name for f in flat.glob("[ab]_*.png"))
    batch = collate([dataset[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    # a label that reached a loss would fail, not be learnt
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.functional.cross_entropy(torch.zeros(3, 2), batch["labels"])


def test_other_layouts_are_the_training_split_load_data_reads(same_images_two_layouts):
    _, labelled = same_images_two_layouts
    dataset, _ = load_unlabelled(str(labelled), _cfg(), DataOptions(image_size=32))
    bundle = load_data(str(labelled), _cfg(), DataOptions(image_size=32))
    assert dataset.paths == bundle.train.paths and len(dataset) == 10


def test_a_flat_folder_of_unreadable_images_is_refused(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="none of its 1 images"):
        load_unlabelled(str(tmp_path), _cfg(), DataOptions(image_size=32))


def _finetune(out, target, capsys):
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-1", "--image-size", "32",
                            "--max-train", "16", "--max-val", "8", "--epochs", "1", "--batch-size", "8",
                            "--device", "cpu", "--strategy", "dann", "--target-data", str(target), "--out",
                            str(out)], capsys)
    assert code == 0, err
    return load_file(str(out / "checkpoint" / "last.safetensors")), json.loads((out / "metrics.json").read_text())


def test_finetune_reads_a_flat_folder_as_it_reads_the_same_images_with_labels(same_images_two_layouts, tmp_path,
                                                                              capsys):
    flat, labelled = same_images_two_layouts
    from_flat, flat_metrics = _finetune(tmp_path / "flat_run", flat, capsys)
    from_labelled, labelled_metrics = _finetune(tmp_path / "labelled_run", labelled, capsys)
    assert from_flat.keys() == from_labelled.keys()
    assert all(torch.equal(from_flat[k], from_labelled[k]) for k in from_flat)
    assert flat_metrics["dev"]["risk"] == labelled_metrics["dev"]["risk"]
    # and the target did move the model: a run on other target images ends elsewhere
    other = tmp_path / "other"
    _write_digits(other, {f"c_{i}.png": 60 + i for i in range(10)})
    from_other, _ = _finetune(tmp_path / "other_run", other, capsys)
    assert any(not torch.equal(from_flat[k], from_other[k]) for k in from_flat)


def test_a_flat_folder_for_a_text_model_is_refused(same_images_two_layouts, tiny_bert_dir, small_text_data, tmp_path,
                                                   capsys):
    flat, _ = same_images_two_layouts
    code, _, err = run_cli(["finetune", "--model", str(tiny_bert_dir), "--data", str(small_text_data),
                            "--max-train", "8", "--epochs", "1", "--device", "cpu", "--strategy", "dann",
                            "--target-data", str(flat), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "--target-data" in error_line(err) and "image" in error_line(err)
    assert not (tmp_path / "run").exists()
