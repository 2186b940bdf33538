"""Heads from a registry: linear (the default) and mlp, built from `name[:key=value,...]` specs."""
import json

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.errors import ConfigError
from transferlab.models import create_model, list_heads
from transferlab.models.heads import LinearHead, MLPHead, build_head, parse_head


def test_registry_lists_linear_and_mlp():
    assert {"linear", "mlp"} <= set(list_heads())
    head = build_head("mlp:hidden=32,dropout=0.1", 8, 3)
    assert isinstance(head, MLPHead) and head.fc1.out_features == 32 and head.spec() == "mlp:hidden=32,dropout=0.1"
    assert build_head("linear", 8, 3).spec() == "linear" and build_head("mlp", 8, 3).spec() == "mlp"


@pytest.mark.parametrize("spec,match", [("softmax", "unknown head"), ("mlp:width=3", "unknown key"),
                                        ("mlp:hidden=x", "not a valid int"), ("mlp:hidden=0", "at least 1"),
                                        ("mlp:hidden", "key=value"), ("linear:hidden=3", "unknown key")])
def test_bad_spec_is_a_one_line_config_error(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_head(spec)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        create_model(TINY_IMAGE_MODEL, 3, head=spec)


def test_mlp_forward_backward_and_names():
    model = create_model(TINY_IMAGE_MODEL, 3, head="mlp:hidden=16")
    assert isinstance(model.head, MLPHead) and model.head.loss_terms() == {}
    logits = model({"pixel_values": torch.randn(2, 3, 32, 32)})
    assert logits.shape == (2, 3)
    logits.sum().backward()
    head_params = [n for n, _ in model.named_parameters() if n.startswith("head.")]
    assert head_params == ["head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"]
    assert all(model.is_new_param(n) for n in head_params)
    assert all(model.group_index(n) == model.num_backbone_groups for n in head_params)  # the "head" group
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("head."))


def test_linear_head_keeps_its_tensor_names():
    model = create_model(TINY_IMAGE_MODEL, 3)
    assert isinstance(model.head, LinearHead) and isinstance(model.head, torch.nn.Linear)
    assert {k for k in model.state_dict() if k.startswith("head.")} == {"head.weight", "head.bias"}


def _base_weights(path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in timm.create_model(TINY_IMAGE_MODEL, num_classes=10).state_dict().items()},
              str(path))
    return path


def test_task_module_with_an_mlp_head_round_trips(tmp_path):
    from transferlab.modules import load_task_module
    from transferlab.strategies.peft_methods.task_module import write_task_module
    from transferlab.strategies.registry import parse_one

    weights = str(_base_weights(tmp_path / "base.safetensors"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": TINY_IMAGE_MODEL, "weights": weights,
                                                     "strategy": "lora"}))
    model = create_model(TINY_IMAGE_MODEL, 3, weights=weights, head="mlp:hidden=16")
    strategy = parse_one("lora")
    strategy.prepare_model(model)
    with torch.no_grad():  # as if trained: LoRA's B matrices start at zero
        for name, p in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                p.normal_(0, 0.1)
    model.eval()
    batch = {"pixel_values": torch.randn(2, 3, 32, 32)}
    with torch.no_grad():
        expected = model(batch)
    write_task_module(strategy, model, tmp_path / "module", run_dir=run_dir)
    meta = json.loads((tmp_path / "module" / "transferlab_module.json").read_text())
    assert meta["head"]["spec"] == "mlp:hidden=16"
    loaded = load_task_module(tmp_path / "module")
    assert isinstance(loaded.head, MLPHead) and loaded.num_classes == 3
    with torch.no_grad():
        assert torch.equal(loaded(batch), expected)


def test_head_init_source_refuses_an_mlp_head():
    from torch import nn

    from transferlab.training.head_init import init_head_from_source

    model = create_model(TINY_IMAGE_MODEL, 3, head="mlp")
    model._source_head = [nn.Linear(model.feature_dim, 10)]  # as if built from weights with a classifier
    with pytest.raises(ConfigError, match="needs a linear head.*'mlp'"):
        init_head_from_source(model, [], "cpu")


def test_an_mlp_head_run_through_the_cli_saves_loads_and_predicts(tmp_path, capsys):
    import json

    from transferlab.cli import main
    from transferlab.runs import load_run_model

    out = tmp_path / "run"
    assert main(["finetune", "--model", "test_efficientnet", "--data", "digits:0-2", "--image-size", "16",
                 "--max-train", "30", "--epochs", "1", "--head", "mlp:hidden=16", "--out", str(out)]) in (0, None)
    assert json.loads((out / "config.json").read_text())["head"] == "mlp:hidden=16"
    _, model, _ = load_run_model(out)
    assert model.head.spec() == "mlp:hidden=16"
    assert {n for n, _ in model.named_parameters() if n.startswith("head.")} == \
        {"head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"}
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--model", "test_efficientnet", "--data", "digits:0-2", "--head", "mlp:width=3",
              "--out", str(tmp_path / "bad")])
    assert exc.value.code == 2 and "width" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
