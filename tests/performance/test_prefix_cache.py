"""The frozen-prefix cache: the same results as without it, the frozen groups run once per split instead of once
per epoch, keys that change with everything an entry depends on, and a store with a memory limit and a disk."""
from __future__ import annotations

import logging

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL, shared_data
from transferlab.data import DataOptions
from transferlab.runs import RunCaches, RunConfig, finetune, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.prefix_cache import FeatureStore, entry_key, frozen_prefix, prefix_digest
from transferlab.training.trainer import Trainer


def _config(strategy, cache=True, epochs=3, model=TINY_IMAGE_MODEL, data="digits", augment=False, **train):
    return RunConfig(model=model, data=data, strategy=strategy,
                     train=TrainConfig(epochs=epochs, cache=cache, device="cpu", **train),
                     data_options=DataOptions(image_size=32, max_train=96, max_val=64, max_length=24,
                                              augment=augment))


def _same_metrics(a, b):
    """Accuracy equal, loss equal to float32 rounding: the cached h was computed in evaluation batches of another
    size than the training batches, which changes the last bits of a convolution's sums."""
    for split in ("val", "test"):
        if a[split] is None:
            assert b[split] is None
            continue
        assert a[split]["accuracy"] == b[split]["accuracy"], split
        assert a[split]["loss"] == pytest.approx(b[split]["loss"], rel=1e-6, abs=1e-7), split


class _CountCalls:
    """Counts forward calls of one module (the stem): how often the frozen prefix really ran."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def _train(tmp_path, config, name, store=None):
    data, model, strategy = prepare(config)
    stem = model.get_submodule(model.depth_groups[0].prefixes[0])
    counter = _CountCalls(stem)
    trainer = Trainer(model, strategy, data, config.train, tmp_path / name, feature_store=store)
    metrics = trainer.fit()
    return metrics, trainer, counter.calls


@pytest.mark.parametrize("strategy", ["linear_probe", "freeze:k=3", "lp_ft:lp_epochs=2", "gradual_unfreeze"])
def test_cached_run_equals_uncached_run(tmp_path, strategy):
    cached, trainer, cached_calls = _train(tmp_path, _config(strategy), "cached")
    plain, _, plain_calls = _train(tmp_path, _config(strategy, cache=False), "plain")
    _same_metrics(cached, plain)
    history = trainer.state.history
    assert history[0]["cached_groups"] > 0, "the first epoch of every one of these strategies has a frozen prefix"
    # The stem ran in every batch without the cache, and with it only while computing entries.
    assert cached_calls < plain_calls


def test_computing_an_entry_leaves_the_training_modes_as_the_trainer_set_them(tmp_path):
    """With --bn-stats frozen every BatchNorm layer normalises with its stored statistics, also in the groups
    that train; computing the cache (in eval mode) must not put them back into training mode."""
    cached, trainer, _ = _train(tmp_path, _config("freeze:k=3", bn_stats="frozen"), "cached")
    plain, _, _ = _train(tmp_path, _config("freeze:k=3", bn_stats="frozen", cache=False), "plain")
    assert trainer.state.history[0]["cached_groups"] == 3
    _same_metrics(cached, plain)


def test_linear_probe_runs_the_backbone_once_per_split(tmp_path):
    config = _config("linear_probe", epochs=4)
    metrics, trainer, calls = _train(tmp_path, config, "run")
    batches = -(-96 // 64) + -(-64 // 64)  # train and val, once each, in evaluation batches of 64
    assert calls == batches
    assert [r["cached_groups"] for r in trainer.state.history] == [trainer.model.num_backbone_groups] * 4
    assert metrics["cache_seconds"] > 0


def test_lp_ft_caches_only_its_probe_phase(tmp_path):
    _, trainer, _ = _train(tmp_path, _config("lp_ft:lp_epochs=2", epochs=4), "run")
    groups = [r["cached_groups"] for r in trainer.state.history]
    assert groups[:2] == [trainer.model.num_backbone_groups] * 2 and groups[2:] == [0, 0]


def test_augmented_training_data_is_not_cached_and_the_log_says_why(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="transferlab.training")
    cached, trainer, _ = _train(tmp_path, _config("linear_probe", augment=True), "cached")
    plain, _, _ = _train(tmp_path, _config("linear_probe", augment=True, cache=False), "plain")
    assert "cache off for the train split" in caplog.text
    assert all(r["cached_groups"] == 0 for r in trainer.state.history)
    _same_metrics(cached, plain)  # validation is not augmented: its cached features give the same numbers


def test_lwf_reads_the_inputs_so_the_cache_stays_off(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="transferlab.training")
    config = _config("linear_probe+lwf", epochs=1)
    config.model = "efficientnet_lite0"  # LwF needs the pre-trained source classifier
    _, trainer, _ = _train(tmp_path, config, "run")
    assert "reads the inputs" in caplog.text
    assert trainer.state.history[0]["cached_groups"] == 0


def test_text_model_freeze_equals_uncached(tmp_path, tiny_bert_dir):
    kwargs = dict(model=str(tiny_bert_dir), data=str(shared_data("sst2")), epochs=2)
    cached, trainer, _ = _train(tmp_path, _config("freeze:k=2", **kwargs), "cached")
    plain, _, _ = _train(tmp_path, _config("freeze:k=2", cache=False, **kwargs), "plain")
    assert trainer.state.history[0]["cached_groups"] == 2
    _same_metrics(cached, plain)


def test_grid_cells_share_entries(tmp_path):
    """Two seeds of linear_probe in one store: the second computes nothing (the same pre-trained backbone, the
    same split). (The tiny test model is randomly initialised from the seed, so a real pre-trained one here.)"""
    pretrained = {"model": "efficientnet_lite0", "epochs": 2}
    caches = RunCaches()
    first = finetune(_config("linear_probe", seed=0, **pretrained), tmp_path / "s0", caches=caches)
    misses = caches.features.misses
    second = finetune(_config("linear_probe", seed=1, **pretrained), tmp_path / "s1", caches=caches)
    assert caches.features.misses == misses and caches.features.hits > 0
    assert first["cache_seconds"] > 0 and second["cache_seconds"] == 0
    alone = finetune(_config("linear_probe", seed=1, **pretrained), tmp_path / "alone")
    _same_metrics(second, alone)


def test_key_changes_with_the_frozen_weights_and_not_with_the_rest():
    config = _config("freeze:k=2")
    config.classes = [str(d) for d in range(10)]
    from transferlab.runs import build_model

    model = build_model(config)
    k = 2
    before = prefix_digest(model, k)
    with torch.no_grad():
        later = model.grouped_parameters()[k][0][1]
        later.add_(1.0)  # a group after the cut: h_k does not depend on it
        assert prefix_digest(model, k) == before
        first = model.grouped_parameters()[0][0][1]
        first.add_(1e-6)  # a frozen group's weight: a new key
        assert prefix_digest(model, k) != before
    buffers = [name for name, _ in model.named_buffers() if model.group_index(name) < k]
    assert buffers, "the frozen groups hold BatchNorm statistics"
    with torch.no_grad():
        model.get_buffer(buffers[0]).add_(1.0)  # running statistics count too
    assert entry_key(prefix_digest(model, k), k, "fp", "m") != entry_key(before, k, "fp", "m")
    assert entry_key(before, k, "fp", "m") != entry_key(before, k + 1, "fp", "m")
    assert entry_key(before, k, "fp", "fp32") != entry_key(before, k, "fp", "bf16")


def test_frozen_prefix_counts_leading_groups_only():
    config = _config("full")
    config.classes = ["0", "1"]
    from transferlab.runs import build_model

    model = build_model(config)
    groups = [[name for name, _ in params] for params in model.grouped_parameters()]
    assert frozen_prefix(model, None) == 0
    assert frozen_prefix(model, set(groups[-1])) == model.num_backbone_groups
    assert frozen_prefix(model, set(groups[2]) | set(groups[-1])) == 2
    assert frozen_prefix(model, set(groups[0])) == 0  # the stem trains: nothing to cache


def test_store_keeps_to_its_memory_limit_and_reads_back_from_disk(tmp_path):
    entry = {"index": torch.arange(4), "labels": torch.zeros(4, dtype=torch.long), "features": torch.randn(4, 256)}
    size = sum(t.numel() * t.element_size() for t in entry.values())
    store = FeatureStore(memory_bytes=size + 10)
    assert store.put("a", entry)
    assert store.put("b", {k: v.clone() for k, v in entry.items()})  # evicts "a"
    assert store.get("a") is None and store.get("b") is not None
    small = FeatureStore(memory_bytes=size - 1)
    assert not small.put("c", entry), "too large for memory and no folder: not stored"
    disk = FeatureStore(memory_bytes=0, folder=tmp_path / "cache")
    assert disk.put("d", entry)
    back = FeatureStore(memory_bytes=0, folder=tmp_path / "cache").get("d")
    assert torch.equal(back["features"], entry["features"]) and torch.equal(back["index"], entry["index"])


def test_entry_over_the_memory_limit_trains_uncached(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="transferlab.training")
    _, trainer, _ = _train(tmp_path, _config("freeze:k=1", epochs=1, cache_memory_mb=0), "run")
    assert "above the limit" in caplog.text
    assert trainer.state.history[0]["cached_groups"] == 0


def test_no_cache_flag():
    from transferlab.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o", "--no-cache"])
    assert args.cache is False
    args = parser.parse_args(["finetune", "--model", "m", "--data", "d", "--out", "o"])
    assert args.cache is None  # not given: the TrainConfig default (on)


def test_a_damaged_entry_on_disk_is_computed_again(tmp_path, caplog):
    entry = {"index": torch.arange(3), "labels": torch.zeros(3, dtype=torch.long), "features": torch.randn(3, 8)}
    FeatureStore(folder=tmp_path).put("k", entry)
    (tmp_path / "k.safetensors").write_bytes(b"not safetensors")
    assert FeatureStore(folder=tmp_path).get("k") is None
    from transferlab.safe_io import save_tensors

    save_tensors(tmp_path / "k.safetensors", {"index": torch.arange(3), "labels": torch.zeros(2, dtype=torch.long),
                                              "features": torch.randn(3, 8)})
    assert FeatureStore(folder=tmp_path).get("k") is None
    assert "not a usable cache entry" in caplog.text


def test_cache_dir_keeps_entries_for_a_later_run(tmp_path):
    """A second run with the same --cache-dir computes nothing (the pre-trained backbone, the same split)."""
    first = finetune(_config("linear_probe", epochs=1, model="efficientnet_lite0", cache_dir=str(tmp_path / "c")),
                     tmp_path / "a")
    assert sorted(p.suffix for p in (tmp_path / "c").iterdir()) == [".safetensors", ".safetensors"]
    second = finetune(_config("linear_probe", epochs=1, model="efficientnet_lite0", cache_dir=str(tmp_path / "c")),
                      tmp_path / "b")
    assert first["cache_seconds"] > 0 and second["cache_seconds"] == 0
    _same_metrics(first, second)


def test_cache_dir_must_not_be_an_input(tmp_path):
    from transferlab.errors import ConfigError

    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--cache-dir"):
        finetune(_config("linear_probe", data=str(data), cache_dir=str(data / "a")), tmp_path / "run")
