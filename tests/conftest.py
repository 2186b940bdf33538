"""Shared fixtures: small real data and tiny models, so the suite runs in minutes on 2 CPU cores."""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import pytest

from transferlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
HYMENOPTERA = SHARED_DATA / "hymenoptera"
SST2 = SHARED_DATA / "sst2"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", category=UserWarning)

# A tiny timm architecture (random init) for fast end-to-end runs on digits at 32 px.
TINY_IMAGE_MODEL = "test_efficientnet"


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
    out = tmp_path_factory.mktemp("sst2_small")
    for name, count in (("train.tsv", 160), ("dev.tsv", 80)):
        with open(SST2 / name, newline="", encoding="utf-8") as fh:
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
