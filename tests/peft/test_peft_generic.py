"""`peft:<type>[:key=value,...]`: spec parsing and refusals, the default targets (what pays on CNNs), each
method training only its parameters on the tiny models, and saved modules loading in plain peft."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import TINY_IMAGE_MODEL
from tests.peft.conftest import train
from transferlab.errors import ConfigError
from transferlab.strategies import parse_strategy

IMAGE_SPECS = ["peft:ia3", "peft:loha", "peft:lokr", "peft:lora:use_rslora=true",
               "peft:oft", "peft:boft", "peft:hra"]
TEXT_SPECS = ["peft:ia3", "peft:loha", "peft:lora:use_dora=true", "peft:hra"]


def _one(spec):
    return parse_strategy(spec).parts[0]


def test_spec_round_trips_through_the_config_class():
    s = _one("peft:loha:r=4,alpha=8,module_dropout=0.1")
    assert s.spec() == "peft:loha:r=4,alpha=8,module_dropout=0.1"
    config = s.make_config(["x"])
    assert type(config).__name__ == "LoHaConfig" and config.r == 4 and config.alpha == 8.0
    assert _one("peft:lora:use_dora=true").make_config(["x"]).use_dora is True
    assert _one(s.spec()).config_kwargs == s.config_kwargs


@pytest.mark.parametrize("spec, words", [
    ("peft", "name a type"),
    ("peft:nothing", "unknown type"),
    ("peft:loha:rank=4", "valid keys"),
    ("peft:loha:r=four", "valid keys"),
    ("peft:lora:use_dora=maybe", "valid keys"),
    ("peft:loha:r", "expected key=value"),
    ("peft:prompt_tuning", "virtual tokens"),
    ("peft:prefix_tuning", "virtual tokens"),
    ("peft:vera", "shared"),
    ("peft:adalora", "rank allocator"),
])
def test_bad_specs_are_refused_in_one_line(spec, words):
    with pytest.raises(ConfigError) as info:
        _one(spec)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_method_without_conv_support_is_refused_on_a_cnn():
    from transferlab.models import create_model

    model = create_model(TINY_IMAGE_MODEL, 2)
    with pytest.raises(ConfigError) as info:
        _one("peft:fourierft").prepare_model(model)
    assert "does not apply" in str(info.value) and "Linear" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["lora:targets=conv_dw", "peft:loha:target_modules=conv_dw"])
def test_naming_a_depthwise_convolution_is_refused(spec):
    from transferlab.models import create_model

    model = create_model(TINY_IMAGE_MODEL, 2)
    with pytest.raises(ConfigError) as info:
        _one(spec).prepare_model(model)
    assert "grouped (depthwise)" in str(info.value)


def _share(model, strategy):
    params = dict(model.named_parameters())
    trained = strategy.trainable(model, 0)
    return sum(params[n].numel() for n in trained) / sum(p.numel() for p in params.values())


@pytest.mark.parametrize("spec", ["lora", "peft:loha", "peft:lokr", "peft:ia3"])
@pytest.mark.parametrize("name", [TINY_IMAGE_MODEL, "efficientnet_lite0"])
def test_default_cnn_targets_leave_out_grouped_convolutions(name, spec):
    from transferlab.models import create_model

    model = create_model(name, 2)
    strategy = _one(spec)
    strategy.prepare_model(model)
    targets = strategy.target_modules(model)
    layers = dict(model.backbone.named_modules())
    for target in targets:
        base = layers[target].get_base_layer()
        assert isinstance(base, (nn.Linear, nn.Conv2d)) and getattr(base, "groups", 1) == 1, target
    if name == "efficientnet_lite0":
        assert _share(model, strategy) < 0.01, f"{spec} trains {_share(model, strategy):.2%}"


def test_efficientnet_lite0_lora_trains_under_one_percent():
    from transferlab.models import create_model

    model = create_model("efficientnet_lite0", 2)
    strategy = _one("lora")
    strategy.prepare_model(model)
    assert _share(model, strategy) < 0.01
    assert set(strategy.target_modules(model)) == {"conv_head", "blocks.6.0.conv_pwl"}


def _trains_only_its_parameters(run):
    changed = {k for k in run.before if k in run.after and not torch.equal(run.before[k], run.after[k])}
    params = {k for k in changed if "running_" not in k and "num_batches" not in k}
    assert params, "nothing trained"
    assert params <= run.trainable, sorted(params - run.trainable)[:5]
    assert any(not k.startswith("head.") for k in params), "only the head moved"


@pytest.mark.parametrize("spec", IMAGE_SPECS)
def test_each_method_trains_only_its_parameters_image(spec, tiny_base, tmp_path):
    run = train(tmp_path / "run", TINY_IMAGE_MODEL, "digits:0-4", spec, weights=str(tiny_base), epochs=1,
                image_size=16, max_train=64)
    _trains_only_its_parameters(run)
    assert (run.out / "task_module" / "adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("spec", TEXT_SPECS)
def test_each_method_trains_only_its_parameters_text(spec, tiny_bert_dir, small_text_data, tmp_path):
    run = train(tmp_path / "run", str(tiny_bert_dir), str(small_text_data), spec, epochs=1, lr=3e-3)
    _trains_only_its_parameters(run)


def test_dora_on_convolutions_is_refused():
    from transferlab.models import create_model

    with pytest.raises(ConfigError) as info:
        _one("peft:lora:use_dora=true").prepare_model(create_model(TINY_IMAGE_MODEL, 2))
    assert "DoRA" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["peft:loha", "peft:ia3", "peft:lokr", "peft:oft"])
def test_saved_module_loads_in_plain_peft(spec, tiny_base, tmp_path):
    import timm
    from peft import PeftModel
    from safetensors.torch import load_file

    from transferlab.modules import load_task_module, write_merged

    run = train(tmp_path / "run", TINY_IMAGE_MODEL, "digits:0-4", spec, weights=str(tiny_base), epochs=1,
                image_size=16, max_train=64)
    module = load_task_module(run.out)
    plain = timm.create_model(TINY_IMAGE_MODEL, num_classes=0)
    plain.load_state_dict({k: v for k, v in load_file(str(tiny_base)).items() if not k.startswith("classifier.")})
    plain = PeftModel.from_pretrained(plain, str(run.out / "task_module")).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module.features({"pixel_values": x})
        got = plain(x)
    assert (want - got).abs().max().item() < 1e-5
    report = write_merged(run.out, tmp_path / "merged")  # every peft: type folds into the base weights
    assert report["max_abs_logit_diff"] <= 1e-5


def test_strategies_lists_the_peft_types(capsys):
    import json

    from transferlab.cli import main

    main(["strategies", "--json"])
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    variants = {v["spec"]: v for v in entries["peft"]["variants"]}
    assert {"peft:ia3", "peft:loha", "peft:lokr", "peft:lora", "peft:oft", "peft:boft", "peft:hra"} <= set(variants)
    assert "r" in {p["name"] for p in variants["peft:loha"]["params"]}
    main(["strategies"])
    assert "peft:loha (LoHaConfig)" in capsys.readouterr().out
