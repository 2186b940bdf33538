"""Forgetting diagnostics, the source-weights export, and the ewc / lwf strategies."""
from __future__ import annotations

import json

import pytest
import torch

from tests.diagnostics.conftest import IMAGE_SIZE, tiny_config
from transferlab.cli import main
from transferlab.diagnostics.forgetting import forgetting_for_run
from transferlab.diagnostics.source import source_label_map
from transferlab.errors import ConfigError
from transferlab.strategies import StrategyContext, parse_strategy


def test_source_label_map_reads_indices_imagenet_names_and_a_map():
    assert source_label_map(["0", "3"], 5) == [0, 3]
    assert source_label_map(["ants", "bees"], 1000) == [310, 309]
    assert source_label_map(["x", "y"], 10, {"x": 2, "y": 7}) == [2, 7]
    with pytest.raises(ConfigError):
        source_label_map(["ants"], 5)
    with pytest.raises(ConfigError):
        source_label_map(["9"], 5)


def test_forgetting_with_source_data_and_the_agreement_proxy(tiny_run, capsys):
    r = forgetting_for_run(tiny_run, source_data="digits:0-4")
    assert r.mode == "source_accuracy" and r.source_classes == [0, 1, 2, 3, 4]
    assert r.forgetting == pytest.approx(r.accuracy_before - r.accuracy_after)
    assert 0 <= r.agreement <= 1 and r.examples > 100
    main(["diagnose", "forgetting", "--run", str(tiny_run), "--json"])
    proxy = json.loads(capsys.readouterr().out)
    assert proxy["mode"] == "agreement_proxy" and proxy["accuracy_before"] is None and 0 <= proxy["agreement"] <= 1


def test_forgetting_counts_match_a_direct_count_and_a_cache_skips_the_pretrained_model(tiny_run, monkeypatch):
    from transferlab.diagnostics import forgetting as forgetting_module
    from transferlab.diagnostics._common import make_loader, reference_model
    from transferlab.diagnostics.source import load_source_data
    from transferlab.runs import load_run

    cache: dict = {}
    r = forgetting_for_run(tiny_run, source_data="digits:0-4", cache=cache)
    config, _, tuned, _ = load_run(tiny_run)
    src = load_source_data("digits:0-4", tuned.cfg, image_size=config.data_options.image_size,
                           seed=config.data_options.seed, val_fraction=config.data_options.val_fraction)
    counts = {"before": 0, "after": 0, "same": 0, "n": 0}
    pretrained = reference_model(config)
    tuned.eval()
    with torch.no_grad():
        for batch in make_loader(src, src.val, 32):
            y = torch.tensor([int(src.classes[i]) for i in batch["labels"]])  # class "3" is source class 3
            a, b = pretrained.source_logits(batch).argmax(-1), tuned.source_logits(batch).argmax(-1)
            counts["before"] += (a == y).sum().item()
            counts["after"] += (b == y).sum().item()
            counts["same"] += (a == b).sum().item()
            counts["n"] += len(y)
    assert r.examples == counts["n"]
    assert r.accuracy_before == counts["before"] / counts["n"] and r.accuracy_after == counts["after"] / counts["n"]
    assert r.agreement == counts["same"] / counts["n"]
    # Again with the cache: the pre-trained model is not even built, the source data not read again, and the
    # result is the same (the cache holds one set of pre-trained predictions and one source data set).
    monkeypatch.setattr(forgetting_module, "reference_model", lambda *a, **k: pytest.fail("pre-trained rebuilt"))
    monkeypatch.setattr(forgetting_module, "load_source_data", lambda *a, **k: pytest.fail("source data read again"))
    assert forgetting_for_run(tiny_run, source_data="digits:0-4", cache=cache) == r
    assert sorted(k[0] for k in cache) == ["forgetting", "source_data"]


def test_export_source_weights_makes_the_run_head_the_source_head(tiny_run, tmp_path):
    from transferlab.diagnostics.source import export_source_weights
    from transferlab.models import create_model
    from transferlab.runs import load_run

    out = tmp_path / "w.safetensors"
    export_source_weights(tiny_run, out)
    _, _, trained, _ = load_run(tiny_run)
    model = create_model("test_efficientnet", 3, weights=str(out))
    assert torch.equal(model.source_head.weight, trained.head.weight)
    x = {"pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)}
    model.eval()
    assert torch.allclose(model.source_logits(x), trained(x), atol=1e-5)


def _model_and_ctx(weights, source_data=None):
    from transferlab.data import DataOptions, load_data
    from transferlab.models import create_model
    from transferlab.training.evaluate import to_device

    model = create_model("test_efficientnet", 5, weights=str(weights))
    data = load_data("digits:5-9", model.cfg, DataOptions(image_size=IMAGE_SIZE, max_train=40))

    def batches():
        from torch.utils.data import DataLoader

        for b in DataLoader(data.train, batch_size=16, collate_fn=data.collate):
            yield to_device(b, "cpu")

    ctx = StrategyContext(total_epochs=1, train_batches=batches,
                          options={"source_data": source_data} if source_data else {})
    return model, ctx, next(batches())


@pytest.mark.parametrize("source_data", [None, "digits:0-4"])
def test_ewc_fisher_penalty_and_state(source_weights, source_data):
    model, ctx, batch = _model_and_ctx(source_weights, source_data)
    ewc = parse_strategy("ewc:lam=10,samples=12").part("ewc")
    ewc.on_fit_start(model, ctx)
    assert ewc.fisher and all(f.min() >= 0 for f in ewc.fisher.values())
    assert sum(float(f.sum()) for f in ewc.fisher.values()) > 0
    assert "head.weight" not in ewc.fisher  # the new head has no pre-trained value
    logits = model(batch)
    assert float(ewc.loss_terms(model, batch, logits)["ewc"].detach()) == 0.0  # at w0
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.01)
    assert float(ewc.loss_terms(model, batch, logits)["ewc"].detach()) > 0
    fresh = parse_strategy("ewc:lam=10,samples=12")
    fresh.load_state_dict(parse_strategy("ewc:lam=10,samples=12").state_dict() | {
        f"ewc.{k}": v for k, v in ewc.state_dict().items()})
    assert set(fresh.part("ewc").fisher) == set(ewc.fisher)


def test_lwf_distils_the_original_source_head(source_weights):
    model, ctx, batch = _model_and_ctx(source_weights)
    lwf = parse_strategy("lwf:alpha=1,temperature=2").part("lwf")
    lwf.on_fit_start(model, ctx)
    model.eval()
    logits = model(batch)
    assert float(lwf.loss_terms(model, batch, logits)["lwf"].detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    logits = model(batch)
    term = lwf.loss_terms(model, batch, logits)["lwf"]
    assert float(term.detach()) > 0
    term.backward()  # the distillation gradient reaches the backbone
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_forgetting_strategies_need_a_source_head(tmp_path):
    from transferlab.runs import RunConfig, prepare
    from transferlab.data import DataOptions

    for spec in ("ewc", "lwf"):
        config = RunConfig(model="test_efficientnet", data="digits:5-9", strategy=spec,
                           data_options=DataOptions(image_size=IMAGE_SIZE, max_train=20))
        with pytest.raises(ConfigError, match="source classifier"):
            prepare(config)


def test_lwf_and_ewc_train_end_to_end(source_weights, tmp_path):
    from transferlab.runs import finetune

    config = tiny_config(source_weights, strategy="lwf+ewc:samples=16")
    config.strategy_options = {"source_data": "digits:0-4"}
    metrics = finetune(config, tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert "lwf" in history[0] and "ewc" in history[0]
    assert history[0]["lwf"] > 0 and history[0]["ewc"] >= 0 and metrics["val"]["n"] > 0


def test_ewc_resume_restores_the_fisher_instead_of_recomputing_it(source_weights, tmp_path, monkeypatch):
    from transferlab.runs import prepare
    from transferlab.strategies import forgetting
    from transferlab.training.trainer import Trainer

    config = tiny_config(source_weights, strategy="full+ewc:samples=8")
    data, model, strategy = prepare(config)
    Trainer(model, strategy, data, config.train, tmp_path / "run").fit()
    saved = strategy.part("ewc").fisher

    def no_second_estimate(*args, **kwargs):
        raise AssertionError("the Fisher diagonal was estimated again on resume")

    monkeypatch.setattr(forgetting, "empirical_fisher", no_second_estimate)
    data, model, strategy = prepare(config)
    Trainer(model, strategy, data, config.train, tmp_path / "run").setup(resume=True)
    restored = strategy.part("ewc").fisher
    assert set(restored) == set(saved) and all(torch.equal(restored[k], saved[k]) for k in saved)
    with pytest.raises(ValueError, match="no EWC Fisher"):
        parse_strategy("ewc").load_state_dict({})
