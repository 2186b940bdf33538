"""The from-scratch baseline: the same model entry with random weights, built without any network."""
from __future__ import annotations

import torch

from transferlab.compare.grid import GridSpec, scratch_config, scratch_support
from transferlab.runs import RunConfig


def test_text_model_scratch_is_a_random_init_folder_with_the_same_config(tiny_bert_dir, small_text_data, tmp_path):
    from transformers import AutoConfig, AutoModel

    spec = GridSpec(base=RunConfig(model=str(tiny_bert_dir), data=str(small_text_data)), strategies=["full"])
    cfg = scratch_config(spec, seed=5, out=tmp_path)  # the fixture itself is seed 0
    folder = tmp_path / "scratch_init" / "seed5"
    assert cfg.model == str(folder.resolve()) and cfg.strategy == "full" and cfg.weights is None
    assert AutoConfig.from_pretrained(folder).to_dict()["hidden_size"] == 64
    assert (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()
    source = AutoModel.from_pretrained(tiny_bert_dir).state_dict()
    random = AutoModel.from_pretrained(folder).state_dict()
    key = next(k for k in source if k.endswith("query.weight"))
    assert not torch.equal(source[key], random[key])
    again = scratch_config(spec, seed=5, out=tmp_path)  # kept, not rebuilt
    assert again.model == cfg.model


def test_scratch_support():
    assert scratch_support("efficientnet_lite0")[0] == "weights"
    assert scratch_support("minilm_l6")[0] == "hf_dir"
    assert scratch_support("test_efficientnet")[0] == "weights"
    assert scratch_support("no_such_model_anywhere")[0] == "none"
