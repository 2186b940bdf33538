"""Every core strategy, end to end on real data: exactly the intended parameters change."""
import re

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL


def changed_keys(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def group_of(net, key):
    return net.group_index(key)


def keys_in_groups(net, before, groups, params_only=True):
    names = {n for n, _ in net.named_parameters()}
    return {k for k in before if net.group_index(k) in groups and (k in names or not params_only)}


@pytest.mark.parametrize("strategy", ["full", "discriminative:decay=0.5", "l2sp", "lp_ft:lp_epochs=1"])
def test_everything_trains(trained, strategy):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", strategy)
    params = {n for n, _ in net.named_parameters()}
    assert params <= changed_keys(before, after)


def test_linear_probe_changes_only_the_head_and_keeps_bn_statistics(trained):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", "linear_probe")
    assert changed_keys(before, after) == {"head.weight", "head.bias"}  # buffers included: BN stats kept


def test_freeze_keeps_first_groups_and_their_bn_statistics(trained):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", "freeze:k=2")
    changed = changed_keys(before, after)
    frozen = {k for k in before if net.group_index(k) < 2}
    assert frozen and not (frozen & changed)  # weights, BN running stats, num_batches_tracked
    trainable = {n for n, _ in net.named_parameters() if net.group_index(n) >= 2}
    assert trainable <= changed


def test_freeze_train_bn_lets_frozen_batchnorm_adapt(trained):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", "freeze:k=2,train_bn=true")
    changed = changed_keys(before, after)
    frozen = {k for k in before if net.group_index(k) < 2}
    bn_keys = {k for k in frozen if re.search(r"\.bn\d?\.", k) or ".bn" in k}
    conv_keys = {k for k in frozen if k.endswith("conv.weight") or "conv_stem" in k or "conv_dw" in k}
    assert bn_keys and any("running_mean" in k for k in bn_keys & changed)
    assert conv_keys and not (conv_keys & changed)


def test_gradual_unfreeze_trains_only_the_unfrozen_top(trained):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", "gradual_unfreeze:every=1", epochs=2)
    last = len(net.depth_groups) - 1
    changed = changed_keys(before, after)
    params = {n for n, _ in net.named_parameters()}
    assert {n for n in params if net.group_index(n) in (last - 1, last)} <= changed
    assert not {k for k in changed if net.group_index(k) < last - 1}


@pytest.mark.parametrize("strategy, trains", [
    ("linear_probe", lambda i, last: i == last),
    ("freeze:k=2", lambda i, last: i >= 2),
    ("gradual_unfreeze", lambda i, last: i >= last - 1),
    ("full", lambda i, last: True),
    ("discriminative:decay=0.5", lambda i, last: True),
    ("l2sp", lambda i, last: True),
    ("lp_ft:lp_epochs=1", lambda i, last: True),
])
def test_text_model_strategies(trained, tiny_bert_dir, small_text_data, strategy, trains):
    net, before, after, _ = trained(str(tiny_bert_dir), str(small_text_data), strategy, epochs=2)
    last = len(net.depth_groups) - 1
    changed = changed_keys(before, after)
    params = {n for n, _ in net.named_parameters()}
    expected = {n for n in params if trains(net.group_index(n), last)}
    # token_type / position rows never looked up get no gradient, but weight decay moves them too:
    assert expected <= changed | {n for n in expected if n.endswith("token_type_embeddings.weight")}
    assert not (changed & (params - expected))


@pytest.mark.parametrize("strategy", ["full", "lp_ft:lp_epochs=1"])
def test_bn_stats_frozen_trains_weights_but_keeps_running_statistics(trained, strategy):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", strategy, bn_stats="frozen")
    changed = changed_keys(before, after)
    stats = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert stats and not (stats & changed)
    params = {n for n, _ in net.named_parameters()}
    bn_weights = {k for k in params if k.replace(".weight", ".running_mean") in stats}
    assert bn_weights and params <= changed  # BN affine weights and everything else still train


def test_bn_stats_auto_reestimates_statistics_of_trained_layers(trained):
    net, before, after, _ = trained(TINY_IMAGE_MODEL, "digits", "full")
    stats = {k for k in before if k.endswith("running_mean")}
    assert stats <= changed_keys(before, after)
