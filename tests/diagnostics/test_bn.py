"""Corruptions, BatchNorm shift and AdaBN."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_data
from transferlab.cli import main
from transferlab.diagnostics.bn import bn_shift, symmetric_kl
from transferlab.diagnostics.corrupt import KINDS, corrupt_folder, corrupt_image
from transferlab.errors import ConfigError


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """4 real hymenoptera images per class and split, shrunk to 64 px (a copy in tmp)."""
    hymenoptera = shared_data("hymenoptera")
    out = tmp_path_factory.mktemp("hym_small")
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            (out / split / cls).mkdir(parents=True)
            for path in sorted((hymenoptera / split / cls).iterdir())[:4]:
                with Image.open(path) as img:
                    img.convert("RGB").resize((64, 64)).save(out / split / cls / path.name)
    (out / "README.txt").write_text("not an image")
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_corrupt_copies_the_layout_and_is_deterministic_per_seed(small_folder, tmp_path):
    a = corrupt_folder(small_folder, tmp_path / "a", "gaussian_noise", 3, seed=1)
    corrupt_folder(small_folder, tmp_path / "b", "gaussian_noise", 3, seed=1)
    corrupt_folder(small_folder, tmp_path / "c", "gaussian_noise", 3, seed=2)
    assert a.images == 16 and a.copied == 1
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert set(fa) == set(_files(small_folder))
    assert fa == fb
    assert fa != fc and fa["README.txt"] == fc["README.txt"]


# The published elastic_transform levels are not ordered by how much they change an image (at severity 1 it moves
# pixels most); tests/diagnostics/test_corruptions15.py checks every kind against its published parameters.
UNORDERED = {"elastic_transform"}


def test_every_kind_corrupts_more_with_severity(small_folder):
    path = next((small_folder / "train" / "ants").iterdir())
    with Image.open(path) as img:
        clean = np.asarray(img.convert("RGB"), dtype=np.float32)
        for kind in (k for k in KINDS if k not in UNORDERED):
            dist = []
            for severity in (1, 5):
                out = corrupt_image(img, kind, severity, np.random.default_rng(0))
                assert out.size == img.size and out.mode == "RGB"
                dist.append(np.abs(np.asarray(out, dtype=np.float32) - clean).mean())
            assert dist[1] > dist[0] > 0, kind
    with pytest.raises(ConfigError):
        corrupt_image(img, "smoke", 1)
    with pytest.raises(ConfigError):
        corrupt_image(img, "blur", 6)


def test_symmetric_kl():
    m, v = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])
    assert torch.allclose(symmetric_kl(m, v, m, v, eps=0), torch.zeros(2))
    # N(0,1) vs N(1,1): KL = 1/2 each way
    assert float(symmetric_kl(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([1.0]),
                              eps=0)) == pytest.approx(1.0)


def test_adabn_statistics_match_the_data_they_were_estimated_on(tiny_run):
    from torch.utils.data import DataLoader

    from transferlab.diagnostics.adabn import adapt_batchnorm
    from transferlab.runs import load_run

    _, data, model, _ = load_run(tiny_run)
    one_batch = DataLoader(data.val, batch_size=len(data.val), collate_fn=data.collate)
    before, _ = bn_shift(model, one_batch, "cpu")
    layers, batches, n = adapt_batchnorm(model, one_batch, "cpu")
    assert batches == 1 and n == len(data.val) and layers == len(before)
    after, _ = bn_shift(model, one_batch, "cpu")
    assert max(layer.skl for layer in after) < 1e-3  # only the unbiased-vs-biased variance differs
    assert sum(layer.skl for layer in before) > sum(layer.skl for layer in after)
    assert [layer.index for layer in after] == list(range(len(after)))
    stored = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    adapt_batchnorm(model, DataLoader(data.val, batch_size=8, collate_fn=data.collate), "cpu", max_batches=2,
                    source_weight=1.0)  # all prior: the statistics stay
    assert all(torch.allclose(model.state_dict()[k], v) for k, v in stored.items())


def test_adapt_bn_cli_writes_a_run_that_evaluate_reads(tiny_run, tmp_path, capsys):
    out = tmp_path / "adapted"
    main(["adapt-bn", "--run", str(tiny_run), "--data", "digits:5-9", "--out", str(out)])
    capsys.readouterr()
    assert json.loads((out / "adabn.json").read_text())["images"] == 100
    main(["evaluate", "--run", str(out)])
    result = json.loads(capsys.readouterr().out)
    assert result["n"] > 0 and 0 <= result["accuracy"] <= 1
    from transferlab.safe_io import load_tensors

    old = load_tensors(tiny_run / "checkpoint" / "best.safetensors")
    new = load_tensors(out / "checkpoint" / "best.safetensors")
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all("running_" in k or "num_batches_tracked" in k for k in changed)
    with pytest.raises(SystemExit):
        main(["adapt-bn", "--run", str(tiny_run), "--data", "digits:5-9", "--out", str(out)])


def test_cli_corrupt_and_bn_shift_of_a_model(small_folder, tmp_path, capsys):
    noisy = tmp_path / "noisy"
    main(["data", "corrupt", "--data", str(small_folder), "--kind", "contrast", "--severity", "4",
          "--out", str(noisy)])
    assert json.loads(capsys.readouterr().out)["images"] == 16
    main(["diagnose", "bn-shift", "--model", "test_efficientnet", "--data", str(noisy), "--image-size", "32",
          "--json", "--plot", str(tmp_path / "bn.png")])
    out = json.loads(capsys.readouterr().out)
    assert out["examples"] == 8 and len(out["layers"]) > 3
    assert all(layer["skl"] >= 0 for layer in out["layers"])
    assert (tmp_path / "bn.png").stat().st_size > 0
