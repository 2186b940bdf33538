"""The real SST-2 files with the real MiniLM tokenizer."""
from collections import Counter

from torch.utils.data import DataLoader

from transferlab.data import DataOptions, load_data


def test_sst2_max_train_and_dynamic_padding(sst2, text_cfg, tokenizer):
    bundle = load_data(str(sst2), text_cfg, DataOptions(max_train=200, seed=0), tokenizer=tokenizer)
    assert bundle.summary() == {"kind": "text", "classes": ["0", "1"], "train": 200, "val": 6735, "test": 872,
                                "skipped": 0}
    # train.tsv holds 26,786 negatives and 33,828 positives: 88.4 and 111.6 of 200.
    assert Counter(bundle.train.targets) == {0: 88, 1: 112}
    again = load_data(str(sst2), text_cfg, DataOptions(max_train=200, seed=0), tokenizer=tokenizer)
    assert again.train.texts == bundle.train.texts
    test_items = [bundle.test[i] for i in range(len(bundle.test))]
    assert ("it 's a charming and often affecting journey .", 1) in test_items
    lengths = [len(text) for text, _ in test_items]
    assert lengths == sorted(lengths)  # evaluation sets are sorted by length: less padding

    batch = next(iter(DataLoader(bundle.train, batch_size=16, shuffle=False, collate_fn=bundle.collate)))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(1)
    assert ids.shape == mask.shape == batch["token_type_ids"].shape == (16, int(lengths.max()))
    assert int(lengths.max()) < text_cfg.max_length  # padded to the longest phrase, not to max_length
    assert int(lengths.min()) < int(lengths.max())  # so some rows carry padding
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == bundle.train.targets[:16]
