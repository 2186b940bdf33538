"""Unreadable and unusual image files: the readable ones load as (3, H, W), the bad ones are named."""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from transferlab.data import DataError, DataOptions, load_data
from transferlab.data._images import read_image

GOOD = ["rgb.jpg", "grey.png", "cmyk.jpg", "sixteen_bit.png", "rgba.png", "palette.gif", "upper.JPEG"]
BAD_AT_LOAD = ["random_bytes.jpg", "zero_bytes.jpg", "text.jpg", "corrupt_crc.png", "bomb.png", "huge_bomb.png"]


@pytest.fixture
def messy_folder(tmp_path, save_image, fake_png):
    """train/a holds every readable kind; train/b holds one good image and every bad kind."""
    a, b = tmp_path / "train" / "a", tmp_path / "train" / "b"
    save_image(a / "rgb.jpg", size=(48, 40))
    save_image(a / "grey.png", mode="L")
    save_image(a / "cmyk.jpg", mode="CMYK")
    save_image(a / "sixteen_bit.png", mode="I;16")
    save_image(a / "rgba.png", mode="RGBA")
    save_image(a / "palette.gif", mode="P")
    save_image(a / "upper.JPEG")
    save_image(b / "good.png")
    b.joinpath("random_bytes.jpg").write_bytes(np.random.default_rng(0).bytes(600))
    b.joinpath("zero_bytes.jpg").write_bytes(b"")
    b.joinpath("text.jpg").write_text("this is not an image\n")
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(png, "PNG")
    data = bytearray(png.getvalue())
    data[data.index(b"IDAT") + 8] ^= 0xFF  # a flipped bit: the chunk checksum no longer matches
    b.joinpath("corrupt_crc.png").write_bytes(bytes(data))
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    b.joinpath("truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    fake_png(b / "bomb.png", 8000, 8000)  # 64M pixels: under PIL's own limit, over ours
    fake_png(b / "huge_bomb.png", 100_000, 100_000)
    b.joinpath("notes.txt").write_text("ignored: not an image extension")
    return tmp_path


def test_bad_images_are_skipped_and_named(messy_folder, image_cfg):
    bundle = load_data(str(messy_folder), image_cfg, DataOptions(image_size=16, val_fraction=0.25))
    skipped = {os.path.basename(item["path"]): item["reason"] for item in bundle.skipped.to_list()}
    assert set(skipped) == set(BAD_AT_LOAD)  # found by the cheap check at load time
    assert skipped["zero_bytes.jpg"] == "empty file (0 bytes)"
    assert "decompression bomb" in skipped["bomb.png"] and "decompression bomb" in skipped["huge_bomb.png"]
    paths = bundle.train.paths + bundle.val.paths
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(GOOD + ["good.png", "truncated.jpg"])

    # A truncated JPEG passes verify() and fails when decoded: None, logged once over two epochs.
    for _ in range(2):
        items = {os.path.basename(p): ds[i] for ds in (bundle.train, bundle.val) for i, p in enumerate(ds.paths)}
    assert items["truncated.jpg"] is None
    assert bundle.skipped.count == len(BAD_AT_LOAD) + 1
    assert "truncated" in bundle.skipped.to_list()[-1]["reason"]
    for name in GOOD + ["good.png"]:
        x, _ = items[name]
        assert x.shape == (3, 16, 16) and torch.isfinite(x).all(), name


def test_collate_drops_unreadable_items(messy_folder, image_cfg):
    bundle = load_data(str(messy_folder), image_cfg, DataOptions(image_size=16, val_fraction=0.25))
    everything = bundle.train.subset(range(len(bundle.train)))
    loader = DataLoader(everything, batch_size=len(everything), collate_fn=bundle.collate)
    batch = next(iter(loader))
    has_truncated = any(p.endswith("truncated.jpg") for p in everything.paths)
    assert batch["pixel_values"].shape == (len(everything) - has_truncated, 3, 16, 16)
    assert batch["labels"].shape == (len(everything) - has_truncated,)
    empty = bundle.collate([None, None])  # every item unreadable: an empty batch, documented
    assert empty["labels"].shape == (0,) and empty["pixel_values"].shape == (0, 3, 16, 16)


def test_pil_globals_are_left_alone(messy_folder, image_cfg):
    before = Image.MAX_IMAGE_PIXELS
    load_data(str(messy_folder), image_cfg, DataOptions(image_size=16))
    assert Image.MAX_IMAGE_PIXELS == before and ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    rgb = np.asarray(read_image(str(tmp_path / "g16.png")))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 100, 128, 255]


def test_transparency_is_composited_on_white_and_cmyk_becomes_rgb(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(read_image(str(tmp_path / "clear.png")))[0, 0].tolist() == [255, 255, 255]
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "red.jpg", quality=100)
    red = np.asarray(read_image(str(tmp_path / "red.jpg")))[0, 0]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_class_with_only_unreadable_images(tmp_path, save_image, image_cfg):
    save_image(tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "1.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="unreadable"):
        load_data(str(tmp_path), image_cfg, DataOptions(image_size=8))


def test_load_single_image_for_predictions(tmp_path, save_image, image_cfg):
    from transferlab.data import load_single_image

    x = load_single_image(str(save_image(tmp_path / "one.png", mode="L")), image_cfg, DataOptions(image_size=16))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(DataError, match="cannot read the image"):
        load_single_image(str(tmp_path / "bad.jpg"), image_cfg)
    with pytest.raises(DataError, match="no such image file"):
        load_single_image(str(tmp_path / "missing.jpg"), image_cfg)
