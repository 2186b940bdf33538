"""The methods' claimed effects: which tensors train, zero-initialised modules, composition, spec errors."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.peft.conftest import METHODS
from transferlab.errors import ConfigError
from transferlab.strategies import parse_strategy


def _allowed(method: str, name: str) -> bool:
    """Which state-dict entries a method may change: its own parameters, the head, and for BitFit the
    biases plus the running statistics of BatchNorm layers that then run in training mode."""
    if name.startswith("head."):
        return True
    if method == "lora":
        return ".lora_A.default." in name or ".lora_B.default." in name
    if method == "adapter":
        return ".tl_adapter.default." in name
    return name.endswith(".bias") or name.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("method", METHODS)
def test_only_the_methods_tensors_change(method, modality, image_runs, text_runs):
    run = (image_runs if modality == "image" else text_runs)[method]
    assert set(run.before) == set(run.after)
    changed = {k for k in run.before if not torch.equal(run.before[k], run.after[k])}
    unexpected = sorted(k for k in changed if not _allowed(method, k))
    assert not unexpected, f"{method} changed tensors it must not: {unexpected[:5]}"
    # ... and it did train: the head and some of the method's own parameters moved
    assert {"head.weight", "head.bias"} <= changed
    own = {k for k in changed if not k.startswith("head.") and not k.endswith(("running_mean", "running_var",
                                                                               "num_batches_tracked"))}
    assert own, f"{method}: none of its own parameters changed"
    # the trainable set is exactly the method's parameters and the head
    assert all(_allowed(method, n) for n in run.trainable)
    assert run.metrics["trainable_params"] < 0.5 * run.metrics["total_params"]


def test_lora_and_adapter_leave_batchnorm_statistics_alone(image_runs):
    for method in ("lora", "adapter"):
        run = image_runs[method]
        stats = [k for k in run.before if k.endswith(("running_mean", "running_var"))]
        assert stats and all(torch.equal(run.before[k], run.after[k]) for k in stats)


def _model(kind, tiny_bert_dir, tiny_base):
    from transferlab.models import create_model

    if kind == "image":
        return create_model(TINY_IMAGE_MODEL, 3, weights=str(tiny_base))
    return create_model(str(tiny_bert_dir), 3)


def _batch(model):
    gen = torch.Generator().manual_seed(0)
    if model.cfg.modality == "image":
        return {"pixel_values": torch.randn(3, 3, 16, 16, generator=gen)}
    return dict(model.tokenizer(["a fine film", "not good at all , sadly", "ok"], padding=True,
                                return_tensors="pt"))


@pytest.mark.parametrize("kind, spec", [(kind, spec) for kind in ("image", "text")
                                        for spec in ("adapter", "adapter:kind=pfeiffer", "lora", "bitfit")
                                        if not (kind == "image" and "pfeiffer" in spec)])
def test_output_unchanged_before_training(spec, kind, tiny_bert_dir, tiny_base):
    model = _model(kind, tiny_bert_dir, tiny_base).eval()
    batch = _batch(model)
    with torch.no_grad():
        before = model(batch)
    strategy = parse_strategy(spec)
    strategy.prepare_model(model)
    added = [n for n, _ in model.named_parameters() if ".lora_" in n or ".tl_adapter." in n]
    assert bool(added) == (not spec.startswith("bitfit"))
    assert all(model.is_new_param(n) for n in added)  # L2-SP treats them as new
    with torch.no_grad():
        after = model.eval()(batch)
    assert torch.equal(before, after)
    # every added parameter belongs to a backbone depth group (the hosting layer's)
    for name in added:
        assert model.depth_groups[model.group_index(name)].name != "head"


def test_houlsby_has_twice_the_adapters_of_pfeiffer(tiny_bert_dir, tiny_base):
    counts = {}
    for kind in ("houlsby", "pfeiffer"):
        model = _model("text", tiny_bert_dir, tiny_base)
        parse_strategy(f"adapter:kind={kind}").prepare_model(model)
        counts[kind] = len({n.split(".tl_adapter.")[0] for n, _ in model.named_parameters() if ".tl_adapter." in n})
    assert counts == {"houlsby": 4, "pfeiffer": 2}  # 2 layers


def test_composition_with_core_strategies(tiny_base, tiny_bert_dir):
    model = _model("image", tiny_bert_dir, tiny_base)
    spec = parse_strategy("lora+discriminative:decay=0.5+l2sp:alpha=0.1,beta=0.01")
    spec.prepare_model(model)
    scales = spec.lr_scales(model, 0)
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.5 ** (len(scales) - 1))
    spec.on_fit_start(model, None)
    trainable = spec.trainable(model, 0)
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    terms = spec.loss_terms(model, {}, torch.zeros(1, 3))
    assert terms["l2sp_pull"].item() == 0.0  # no pre-trained weight trains under LoRA ...
    assert terms["l2sp_new"].item() > 0.0    # ... LoRA's A matrices and the head are new parameters
    for bad in ("lora+full", "adapter+linear_probe", "bitfit+lora"):
        with pytest.raises(ConfigError, match="contradictory"):
            parse_strategy(bad)


def test_bitfit_with_l2sp_pulls_biases_towards_pretrained(tiny_base, tiny_bert_dir):
    model = _model("image", tiny_bert_dir, tiny_base)
    spec = parse_strategy("bitfit+l2sp")
    spec.prepare_model(model)
    spec.on_fit_start(model, None)
    trainable = spec.trainable(model, 0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)
            if n.endswith(".bias") and n.startswith("backbone."):
                p.add_(0.1)
    assert spec.loss_terms(model, {}, torch.zeros(1, 3))["l2sp_pull"].item() > 0


@pytest.mark.parametrize("spec, kind, message", [
    ("lora:r=0", "image", "r must be"),
    ("lora:targets=nothing_like_this", "image", "matches no Linear"),
    ("lora:targets=(", "image", "not a valid regex"),
    ("adapter:kind=parallel", "text", "does not apply"),
    ("adapter:kind=houlsby", "image", "does not apply"),
    ("adapter:kind=serial", "image", "kind must be one of"),
])
def test_bad_specs_get_clear_errors(spec, kind, message, tiny_base, tiny_bert_dir):
    with pytest.raises(ConfigError, match=message):
        strategy = parse_strategy(spec)
        strategy.prepare_model(_model(kind, tiny_bert_dir, tiny_base))


def test_lora_targets_take_names_or_regex(tiny_bert_dir, tiny_base):
    model = _model("text", tiny_bert_dir, tiny_base)
    strategy = parse_strategy("lora:targets=query|value").parts[0]
    assert all(t.rsplit(".", 1)[-1] in ("query", "value") for t in strategy.target_modules(model))
    strategy = parse_strategy(r"lora:targets=layer\.1\..*dense").parts[0]
    assert strategy.target_modules(model) == ["encoder.layer.1.attention.output.dense",
                                              "encoder.layer.1.intermediate.dense", "encoder.layer.1.output.dense"]
