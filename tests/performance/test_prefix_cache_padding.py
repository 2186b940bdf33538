"""The frozen-prefix cache keeps every real token of a text, whichever side its tokenizer pads: rows of a
left-padding tokenizer (common behind `hf:` ids) once lost their last tokens to a cut that assumed right padding
(`[[0, 0, 1, 1, 1]]` served as `[[0, 0, 1]]`)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from transferlab.data._text import TextCollate
from transferlab.models import create_model
from transferlab.models.hf_models import minilm_dir
from transferlab.training.prefix_cache import cached_loader, compute_entry

TEXTS = ["fine", "a fine film", "not good at all, and far too long for what it has to say", "dull",
         "one of the best films of the year", "bad", "it is what it is", "a quiet, moving and very well made film"]
ITEMS = [(text, i % 2) for i, text in enumerate(TEXTS)]  # a plain list: the dataset compute_entry reads
BATCH = 3  # eval batches of the entry: each pads to its own longest text, the entry to the split's longest


@pytest.fixture(scope="module", params=["left", "right"])
def setting(request, tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), padding_side=request.param)
    model = create_model(str(tiny_bert_dir), 2).eval()
    return request.param, model, TextCollate(tokenizer, max_length=24)


@pytest.mark.parametrize("k", [1, 2])
def test_cached_batches_are_the_uncached_ones(setting, k):
    """In dataset order (evaluation), each cached batch is the uncached batch's frozen-prefix output: the same
    attention mask (every real token, padded on the tokenizer's side to the batch's longest text), the same
    token states, and so the same logits."""
    side, model, collate = setting
    entry = compute_entry(model, ITEMS, collate, k, BATCH, "cpu")
    loader = cached_loader(entry, k, len(ITEMS), batch_size=BATCH)
    with torch.no_grad():
        for start, served in zip(range(0, len(ITEMS), BATCH), loader, strict=True):
            plain = collate(ITEMS[start:start + BATCH])
            if side == "left":
                assert not plain["attention_mask"][:, 0].all(), "the batch is left-padded"
            cut = served["cut_output"]
            assert torch.equal(cut["attention_mask"], plain["attention_mask"]), side
            assert torch.equal(cut["hidden"], model.forward_until(plain, k - 1)["hidden"]), side
            assert torch.equal(model(served), model.forward_from(model.forward_until(plain, k - 1), k - 1))
            torch.testing.assert_close(model(served), model(plain), rtol=1e-5, atol=1e-6)


def test_training_batches_keep_every_real_token(setting):
    """Training batches mix rows of different evaluation batches: each served row holds all of its tokens, laid
    out as the uncached collate pads that batch."""
    side, model, collate = setting
    entry = compute_entry(model, ITEMS, collate, 1, BATCH, "cpu")
    order = [6, 0, 3, 2, 5, 1, 7, 4]
    sampler = BatchSampler([order[i] for i in SequentialSampler(order)], batch_size=4, drop_last=False)
    loader = cached_loader(entry, 1, len(ITEMS), batch_sampler=sampler)
    for rows, served in zip(sampler, loader, strict=True):
        plain = collate([ITEMS[i] for i in rows])
        assert torch.equal(served["cut_output"]["attention_mask"], plain["attention_mask"]), side
        assert torch.equal(served["labels"], plain["labels"])


def test_a_left_padded_row_served_alone_keeps_its_tokens():
    """The row [0, 0, 1, 1, 1] of a longer batch, served alone: its three tokens, not the first three columns."""
    from transferlab.training.prefix_cache import CachedBatches

    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    entry = {"index": torch.arange(2), "labels": torch.zeros(2, dtype=torch.long),
             "hidden": torch.randn(2, 5, 4), "attention_mask": mask}
    cut = CachedBatches(entry, 1, 2)([0])["cut_output"]
    assert torch.equal(cut["attention_mask"], torch.tensor([[1, 1, 1]]))
    assert torch.equal(cut["hidden"], entry["hidden"][:1, 2:])
