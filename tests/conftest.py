"""Shared fixtures: small real data and tiny models, so the suite runs in minutes on 2 CPU cores.

The real data sets (hymenoptera, sst2, sst2_clean, cifar10: docs/data.md) come from $TRANSFERLAB_DATA only, as
the labs find them: `shared_data(name)` (or the `data_root` fixture) skips the test, with the reason, where the
setting is unset or lacks the set. `make test` sets it to ../shared/data where that folder exists."""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import pytest

from transferlab import data as _data
from transferlab.cli import main

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", category=UserWarning)

# A tiny timm architecture (random init) for fast end-to-end runs on digits at 32 px.
TINY_IMAGE_MODEL = "test_efficientnet"


def shared_data(name: str) -> Path:
    """$TRANSFERLAB_DATA/NAME (a real data set), or skip the calling test (or fixture) with the reason."""
    root = _data.data_root()
    if root is None:
        pytest.skip(f"needs the real data set {name}: set {_data.DATA_ENV} to the folder that holds {name}/ "
                    f"(docs/data.md; `make test` sets it to ../shared/data where that exists)")
    if not (root / name).is_dir():
        pytest.skip(f"needs the real data set {name}: {_data.DATA_ENV}={root} has no {name}/")
    return root / name


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder $TRANSFERLAB_DATA names (the test skips where it is unset or not a folder)."""
    root = _data.data_root()
    if root is None or not root.is_dir():
        pytest.skip(f"needs the real data sets: set {_data.DATA_ENV} to the folder that holds them (docs/data.md)"
                    + ("" if root is None else f"; {root} is not a folder"))
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide BERT (random init) saved as a Hugging Face directory, with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from transferlab.models.hf_models import minilm_dir

    out = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_text_data(tmp_path_factory) -> Path:
    """train.tsv (160 rows) and dev.tsv (80 rows) taken from the real SST-2 files."""
    sst2 = shared_data("sst2")
    out = tmp_path_factory.mktemp("sst2_small")
    for name, count in (("train.tsv", 160), ("dev.tsv", 80)):
        with open(sst2 / name, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        header, body = rows[0], rows[1:]
        # balanced and deterministic: the first count/2 rows of each label
        picked = [r for r in body if r[1] == "0"][: count // 2] + [r for r in body if r[1] == "1"][: count // 2]
        with open(out / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="\t")
            writer.writerow(header)
            writer.writerows(picked)
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """transferlab.cli.main in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The CLI's one error line; fails the test on a traceback or on more than one error line."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("transferlab: error:")]
    assert len(lines) == 1, err
    return lines[0]
