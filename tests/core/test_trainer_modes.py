"""Trainer details the review found wrong: frozen groups' dropout, PEFT initialisation seeds, CUDA RNG state."""
from __future__ import annotations

import torch
from torch import nn

from transferlab.runs import RunConfig, build_model
from transferlab.strategies import parse_strategy
from transferlab.training.config import TrainConfig


def _trainer(model, strategy: str):
    from transferlab.training.trainer import Trainer

    trainer = Trainer(model, parse_strategy(strategy), data=None, config=TrainConfig(), out_dir="/nonexistent")
    trainer._configure_epoch = Trainer._configure_epoch.__get__(trainer)
    return trainer


def test_frozen_groups_run_without_dropout(tiny_bert_dir):
    from transferlab.models import create_model

    for strategy, expect_backbone_dropout in (("linear_probe", False), ("full", True), ("freeze:k=2", None)):
        model = create_model(str(tiny_bert_dir), 2)
        strat = parse_strategy(strategy)
        strat.prepare_model(model)
        trainable = strat.trainable(model, 0)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable is None or name in trainable)
        trainer = _trainer(model, strategy)
        trainer._train_mode()
        for (modules, params), group in zip(zip(model.group_modules(), model.grouped_parameters()),
                                            model.depth_groups):
            frozen = not any(p.requires_grad for _, p in params)
            dropouts = [m for _, mod in modules for m in mod.modules() if isinstance(m, nn.Dropout)]
            assert all(d.training == (not frozen) for d in dropouts), (strategy, group.name)
        backbone_dropouts = [m for m in model.backbone.modules() if isinstance(m, nn.Dropout)]
        assert backbone_dropouts
        if expect_backbone_dropout is not None:
            assert all(d.training == expect_backbone_dropout for d in backbone_dropouts), strategy
    # timm applies its pre-logits dropout (drop_rate) by the backbone's own training flag
    image = create_model("tf_efficientnet_lite0", 2)
    for name, p in image.named_parameters():
        p.requires_grad_(name in parse_strategy("linear_probe").trainable(image, 0))
    _trainer(image, "linear_probe")._train_mode()
    assert not image.backbone.training and image.head.training
    x = {"pixel_values": torch.randn(2, 3, 32, 32)}
    assert torch.equal(image.features(x), image.features(x))
    # and so the probe's features are deterministic in training mode
    model = create_model(str(tiny_bert_dir), 2)
    strat = parse_strategy("linear_probe")
    for name, p in model.named_parameters():
        p.requires_grad_(name in strat.trainable(model, 0))
    _trainer(model, "linear_probe")._train_mode()
    batch = dict(model.tokenizer(["a fine film", "not good at all"], padding=True, return_tensors="pt"))
    assert torch.equal(model.features(batch), model.features(batch))


def test_peft_initialisation_follows_the_run_seed():
    def lora_a(seed: int, strategy: str) -> torch.Tensor:
        config = RunConfig(model="test_efficientnet", data="digits", strategy=strategy,
                           train=TrainConfig(seed=seed), classes=["0", "1"])
        model = build_model(config)
        added = [p for n, p in model.named_parameters() if ".lora_A." in n or ".tl_adapter." in n]
        assert added
        return torch.cat([p.detach().flatten() for p in added])

    for strategy in ("lora", "adapter"):
        assert torch.equal(lora_a(0, strategy), lora_a(0, strategy))
        assert not torch.equal(lora_a(0, strategy), lora_a(1, strategy)), strategy


def test_resume_restores_the_cuda_rng_state_when_a_gpu_is_there(monkeypatch, tmp_path):
    """On a CPU machine the CUDA calls are stood in for: the saved per-device states must be handed back."""
    from transferlab.training import trainer as trainer_module

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]

    class _Stub:
        def load_state_dict(self, *_): ...

    trainer = trainer_module.Trainer.__new__(trainer_module.Trainer)
    trainer.model, trainer.optimizer, trainer.strategy = _Stub(), _Stub(), _Stub()
    trainer.precision = None
    trainer.world = trainer_module.distributed.World()  # one process
    trainer.device = torch.device("cpu")
    rng = {"torch": torch.get_rng_state(), "cuda1": states[1], "cuda0": states[0]}
    monkeypatch.setattr(trainer_module, "load_checkpoint", lambda path: ({}, {}, {}, {}, rng))
    trainer._restore(tmp_path / "last.safetensors")
    assert [torch.equal(a, b) for a, b in zip(restored, states)] == [True, True]
