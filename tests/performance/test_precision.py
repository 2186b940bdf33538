"""--precision and --memory-format: what they change inside a step, and that everything else stays as it was
(float32 weights and optimiser, saved weights that load into a plain model, exact resume)."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from transferlab.data import DataOptions
from transferlab.errors import ConfigError
from transferlab.runs import RunConfig, finetune, load_run_model, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.trainer import Trainer


def _config(strategy="full", epochs=2, **train):
    return RunConfig(model=TINY_IMAGE_MODEL, data="digits", strategy=strategy,
                     train=TrainConfig(epochs=epochs, device="cpu", **train),
                     data_options=DataOptions(image_size=32, max_train=64, max_val=32))


class _Seen:
    """Records the dtype and memory layout of the head's and the stem's inputs during training steps."""

    def __init__(self, model):
        self.head_dtypes, self.stem_channels_last, self.stem_weight_channels_last = set(), set(), set()
        stem_name = model.depth_groups[0].prefixes[0]
        stem = model.get_submodule(stem_name)
        conv = next(m for m in stem.modules() if isinstance(m, torch.nn.Conv2d))
        model.head.register_forward_pre_hook(self._head)
        conv.register_forward_pre_hook(self._stem)
        self.conv = conv

    def _head(self, module, inputs):
        if module.training:
            self.head_dtypes.add(inputs[0].dtype)

    def _stem(self, module, inputs):
        self.stem_channels_last.add(inputs[0].is_contiguous(memory_format=torch.channels_last))
        self.stem_weight_channels_last.add(self.conv.weight.is_contiguous(memory_format=torch.channels_last))


def _fit(tmp_path, config, name="run"):
    data, model, strategy = prepare(config)
    seen = _Seen(model)
    trainer = Trainer(model, strategy, data, config.train, tmp_path / name)
    metrics = trainer.fit()
    return metrics, model, seen


def test_bf16_autocasts_the_forward_and_keeps_float32_weights(tmp_path):
    metrics, model, seen = _fit(tmp_path, _config(precision="bf16"))
    assert seen.head_dtypes == {torch.bfloat16}, "the backbone's output reaches the head in bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert metrics["precision"] == "bf16"
    assert metrics["val"]["loss"] == metrics["val"]["loss"]  # finite, not NaN


def test_fp32_runs_in_float32(tmp_path):
    _, _, seen = _fit(tmp_path, _config(precision="fp32", memory_format="contiguous"))
    assert seen.head_dtypes == {torch.float32}
    assert seen.stem_channels_last == {False}


def test_fp16_on_a_cpu_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        finetune(_config(precision="fp16"), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_unknown_precision_and_memory_format_are_refused():
    with pytest.raises(ConfigError, match="--precision"):
        TrainConfig(precision="int8")
    with pytest.raises(ConfigError, match="--memory-format"):
        TrainConfig(memory_format="nhwc")


def test_channels_last_is_the_default_for_convolutional_models(tmp_path):
    _, _, seen = _fit(tmp_path, _config())
    assert seen.stem_channels_last == {True} and seen.stem_weight_channels_last == {True}


def test_channels_last_weights_load_into_a_plain_model_and_predict_the_same(tmp_path):
    finetune(_config(), tmp_path / "run")
    _, model, _ = load_run_model(tmp_path / "run")  # a fresh, contiguous model
    assert all(p.is_contiguous() for p in model.parameters())
    data, _, _ = prepare(_config())
    batch = data.collate([data.val[i] for i in range(8)])
    with torch.no_grad():
        plain = model(batch)
        fast = model.to(memory_format=torch.channels_last)(
            {**batch, "pixel_values": batch["pixel_values"].contiguous(memory_format=torch.channels_last)})
    assert torch.allclose(plain, fast, atol=1e-5)


def test_channels_last_and_contiguous_runs_agree(tmp_path):
    a = finetune(_config(memory_format="channels_last"), tmp_path / "a")
    b = finetune(_config(memory_format="contiguous"), tmp_path / "b")
    assert a["val"]["accuracy"] == b["val"]["accuracy"]
    assert a["val"]["loss"] == pytest.approx(b["val"]["loss"], rel=1e-4)


def test_bf16_resume_equals_the_uninterrupted_run(tmp_path):
    """Killed after epoch 1 (the checkpoint is all that is left), resumed: the same weights as one run."""
    import shutil

    from tests.reliability.conftest import TIMING_KEYS

    config = _config(precision="bf16", epochs=3)
    whole = finetune(config, tmp_path / "whole")
    partial = _config(precision="bf16", epochs=3)
    data, model, strategy = prepare(partial)
    trainer = Trainer(model, strategy, data, partial.train, tmp_path / "part")
    trainer.setup(resume=False)
    trainer._batches_per_epoch = -(-64 // 32)
    record = trainer._run_epoch(0, 3 * trainer._batches_per_epoch)
    trainer.state.history.append(record)
    trainer.state.epoch = 1
    trainer._track_best(record)
    trainer._save_last()
    shutil.copy(tmp_path / "whole" / "config.json", tmp_path / "part" / "config.json")
    resumed = finetune(config, tmp_path / "part", resume=True)
    drop = TIMING_KEYS | {"config"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in whole.items() if k not in drop}
    assert (tmp_path / "part" / "checkpoint" / "best.safetensors").read_bytes() == \
        (tmp_path / "whole" / "checkpoint" / "best.safetensors").read_bytes()


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog):
    from transferlab.training import precision

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    caplog.set_level("WARNING", logger="transferlab.training.precision")
    precision.Precision("bf16", torch.device("cpu"))
    assert "emulated" in caplog.text
    caplog.clear()
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    precision.Precision("bf16", torch.device("cpu"))
    assert caplog.text == ""
