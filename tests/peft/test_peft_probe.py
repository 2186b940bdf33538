"""The peft strategy's training probe (`peft_methods/_probe.py`): a peft layer that fails in a training step on the
model is refused in one line before the run folder exists, and the probe leaves no trace: weights, BatchNorm
statistics, gradients, the random stream and (end to end) the optimizer state are those of a run without it."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.errors import ConfigError


@pytest.fixture(scope="module")
def convnext_weights(tmp_path_factory):
    """Random convnext_atto weights with a 10-class classifier (peft's BOFT Conv2d fails on it in training)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    path = tmp_path_factory.mktemp("convnext") / "convnext_atto.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


def _config(model, strategy, weights=None, data="digits:0-1", image_size=32, epochs=1):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    return RunConfig(model=model, data=data, strategy=strategy, weights=weights,
                     train=TrainConfig(epochs=epochs, lr=1e-2, batch_size=4, eval_batch_size=8, weight_decay=0.0,
                                       warmup=0.0, device="cpu"),
                     data_options=DataOptions(max_train=8, max_val=4, image_size=image_size, max_length=16))


def test_failing_peft_layer_is_refused_in_one_line_before_the_run_folder(convnext_weights, tmp_path):
    from transferlab.runs import finetune, prepare

    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        finetune(_config("convnext_atto", "peft:boft", convnext_weights), out)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("peft:boft on convnext_atto: peft's BOFT Conv2d layer at stages.")
    assert "fails in a training step (RuntimeError in peft/tuners/boft/layer.py:" in message
    assert "view size is not compatible" in message  # peft's own error
    # the channels-last layout is what breaks it: the step passes on a contiguous copy, and the line says so
    assert message.endswith("; it trains with --memory-format contiguous, or use another method, e.g. peft:lora or lora")
    assert not out.exists()
    contiguous = _config("convnext_atto", "peft:boft", convnext_weights)
    contiguous.train.memory_format = "contiguous"
    _check(contiguous, *prepare(contiguous))  # as the line says: no refusal in that layout


def _check(config, data, model, strategy) -> None:
    """The strategy's check as `finetune` calls it."""
    from transferlab.runs import _first_examples
    from transferlab.training.precision import use_channels_last

    strategy.check_training(model, lambda: _first_examples(data, 2),
                            use_channels_last(config.train.memory_format, model))


def _state(model) -> dict:
    """Everything the probe could touch: tensors (values and layout), gradients, flags, modes, the RNG."""
    return {"tensors": {k: (v.detach().clone(), v.stride()) for k, v in model.state_dict(keep_vars=True).items()},
            "grads": {n: p.grad for n, p in model.named_parameters()},
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "training": {n: m.training for n, m in model.named_modules()},
            "rng": torch.random.get_rng_state()}


def _assert_same(before: dict, after: dict) -> None:
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, (value, stride) in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key][0]) and stride == after["tensors"][key][1], key
    assert all(g is None for g in after["grads"].values())
    assert before["requires_grad"] == after["requires_grad"] and before["training"] == after["training"]
    assert torch.equal(before["rng"], after["rng"])


@pytest.mark.parametrize("case", ["tiny efficientnet peft:loha", "convnext peft:boft (refused)", "bert peft:ia3"])
def test_probe_leaves_no_trace(case, tiny_base, convnext_weights, tiny_bert_dir, small_text_data):
    from transferlab.nn_utils import is_batchnorm
    from transferlab.runs import prepare

    config = {"tiny efficientnet peft:loha": _config(TINY_IMAGE_MODEL, "peft:loha", str(tiny_base), image_size=16),
              "convnext peft:boft (refused)": _config("convnext_atto", "peft:boft", convnext_weights),
              "bert peft:ia3": _config(str(tiny_bert_dir), "peft:ia3", data=str(small_text_data),
                                       image_size=None)}[case]
    data, model, strategy = prepare(config)
    torch.manual_seed(123)
    before, tokenizer = _state(model), model.tokenizer
    if "refused" in case:
        with pytest.raises(ConfigError, match="fails in a training step"):
            _check(config, data, model, strategy)
    else:
        _check(config, data, model, strategy)  # no refusal where peft trains
    _assert_same(before, _state(model))
    assert model.tokenizer is tokenizer
    stats = [m for m in model.modules() if is_batchnorm(m)]
    if stats:  # the test would see a probe run on the model itself: a train-mode forward moves the statistics
        from transferlab.runs import _first_examples

        model.train()
        with torch.no_grad():
            model(_first_examples(data, 2))
        assert not torch.equal(before["tensors"][_bn_key(model, stats[0])][0], stats[0].running_mean)


def _bn_key(model, module) -> str:
    return next(f"{n}.running_mean" for n, m in model.named_modules() if m is module)


def test_run_with_probe_equals_run_without(tiny_base, tmp_path, monkeypatch):
    """End to end: weights, optimizer state, RNG state and metrics of a run are those of the same run without the
    probe (check_training replaced by nothing)."""
    import json

    from tests.reliability.conftest import strip_timing
    from transferlab.runs import finetune
    from transferlab.strategies.peft_methods import peft_generic
    from transferlab.training.checkpoint import load_checkpoint

    config = _config(TINY_IMAGE_MODEL, "peft:loha", str(tiny_base), image_size=16, epochs=2)
    calls = []
    probe = peft_generic.PeftGeneric.check_training
    monkeypatch.setattr(peft_generic.PeftGeneric, "check_training",
                        lambda self, *a: (calls.append(1), probe(self, *a))[1])
    finetune(config, tmp_path / "probed")
    monkeypatch.setattr(peft_generic.PeftGeneric, "check_training", lambda self, *a: None)
    finetune(config, tmp_path / "plain")
    assert calls == [1]
    probed = load_checkpoint(tmp_path / "probed" / "checkpoint" / "last.safetensors")
    plain = load_checkpoint(tmp_path / "plain" / "checkpoint" / "last.safetensors")
    for part in (0, 1, 4):  # model state (BatchNorm statistics included), optimizer state, RNG state
        assert probed[part].keys() == plain[part].keys() and probed[part]
        assert all(_equal(probed[part][k], plain[part][k]) for k in probed[part]), part
    metrics = [strip_timing(json.loads((tmp_path / d / "metrics.json").read_text())) for d in ("probed", "plain")]
    assert metrics[0]["val"] == metrics[1]["val"] and metrics[0]["best_epoch"] == metrics[1]["best_epoch"]


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_an_error_outside_peft_is_left_to_the_run(tiny_base):
    """The probe judges peft's layers only: a failure elsewhere (here the head's) is not refused as peft's."""
    from transferlab.runs import _first_examples, prepare

    config = _config(TINY_IMAGE_MODEL, "peft:loha", str(tiny_base), image_size=16)
    data, model, strategy = prepare(config)

    def broken(_features):
        raise RuntimeError("not peft")

    model.head.forward = broken
    _check(config, data, model, strategy)
    with pytest.raises(RuntimeError, match="not peft"):  # the run meets it as it always did
        model(_first_examples(data, 2))
