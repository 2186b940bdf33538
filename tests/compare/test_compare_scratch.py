"""The from-scratch baseline: the same model entry with random weights, built without any network."""
from __future__ import annotations

import pytest
import torch

from transferlab.compare.grid import (
    SCRATCH_SEARCH,
    SCRATCH_STRATEGY,
    GridSpec,
    scratch_config,
    scratch_name,
    scratch_support,
)
from transferlab.runs import RunConfig


def test_text_model_scratch_is_a_random_init_folder_with_the_same_config(tiny_bert_dir, small_text_data, tmp_path):
    from transformers import AutoConfig, AutoModel

    spec = GridSpec(base=RunConfig(model=str(tiny_bert_dir), data=str(small_text_data)), strategies=["full"])
    base_lr = spec.base.train.lr
    # a candidate recipe of the baseline's search: BatchNorm statistics re-estimated, 3x the grid's learning rate
    candidate = scratch_name({"bn_stats": "auto", "lr_scale": 3.0})
    assert candidate == "scratch:bn_stats=auto,lr_scale=3" and candidate in spec.scratch_candidates()
    cfg = scratch_config(spec, seed=5, out=tmp_path, candidate=candidate)  # the fixture itself is seed 0
    folder = tmp_path / "scratch_init" / "seed5"
    assert cfg.model == str(folder.resolve()) and cfg.weights is None
    # every parameter at the base rate, the candidate's BatchNorm mode and learning rate, the grid's epochs
    assert cfg.strategy == SCRATCH_STRATEGY == "full:backbone_lr=1"
    assert cfg.train.bn_stats == "auto" and cfg.train.lr == pytest.approx(3 * base_lr)
    assert cfg.train.seed == 5 and cfg.train.epochs == spec.base.train.epochs
    assert spec.base.train.lr == base_lr and spec.base.strategy != SCRATCH_STRATEGY  # the grid's base is left alone
    assert AutoConfig.from_pretrained(folder).to_dict()["hidden_size"] == 64
    assert (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()
    source = AutoModel.from_pretrained(tiny_bert_dir).state_dict()
    random = AutoModel.from_pretrained(folder).state_dict()
    key = next(k for k in source if k.endswith("query.weight"))
    assert not torch.equal(source[key], random[key])
    # another candidate of the same seed starts from the same random init (kept, not rebuilt), with its own recipe
    other = scratch_name({"bn_stats": "frozen", "lr_scale": 1.0})
    again = scratch_config(spec, seed=5, out=tmp_path, candidate=other)
    assert again.model == cfg.model
    assert again.train.bn_stats == "frozen" and again.train.lr == pytest.approx(base_lr)
    # --scratch-epochs: the baseline's own epoch count
    spec.scratch_epochs = 7
    assert scratch_config(spec, seed=5, out=tmp_path, candidate=other).train.epochs == 7


def test_the_baseline_searches_four_recipes():
    spec = GridSpec(base=RunConfig(model="test_efficientnet", data="digits"), strategies=["full"])
    assert spec.scratch_candidates() == ["scratch:bn_stats=frozen,lr_scale=1", "scratch:bn_stats=frozen,lr_scale=3",
                                         "scratch:bn_stats=auto,lr_scale=1", "scratch:bn_stats=auto,lr_scale=3"]
    assert spec.scratch_candidates() == [scratch_name(r) for r in SCRATCH_SEARCH]
    assert GridSpec(base=spec.base, strategies=["full"], scratch=False).scratch_candidates() == []


def test_scratch_support():
    assert scratch_support("efficientnet_lite0")[0] == "weights"
    assert scratch_support("minilm_l6")[0] == "hf_dir"
    assert scratch_support("test_efficientnet")[0] == "weights"
    assert scratch_support("no_such_model_anywhere")[0] == "none"
