"""Relative weight change, one measurement for `diagnose drift` and the comparison report: checked by hand for a
full run and a LoRA run (on merged weights), adapters get None; and the one test of a reproducible start."""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.diagnostics.conftest import tiny_config


@pytest.fixture(scope="session")
def peft_runs(tmp_path_factory, source_weights):
    from transferlab.runs import finetune

    runs = {}
    for strategy in ("lora", "adapter"):
        out = tmp_path_factory.mktemp("runs") / strategy
        finetune(tiny_config(source_weights, strategy=strategy, lr=3e-2), out)
        runs[strategy] = out
    return runs


def _by_hand(model, effective: dict[str, torch.Tensor], w0: dict[str, torch.Tensor]) -> list[float | None]:
    """sqrt(sum ||w - w0||^2) / sqrt(sum ||w0||^2) per depth group, over names with a pre-trained w0."""
    diff = [0.0] * len(model.depth_groups)
    base = [0.0] * len(model.depth_groups)
    for name, w in effective.items():
        if name in w0:
            g = model.group_index(name)
            diff[g] += float((w.double() - w0[name].double()).pow(2).sum())
            base[g] += float(w0[name].double().pow(2).sum())
    return [math.sqrt(d) / math.sqrt(b) if b > 0 else None for d, b in zip(diff, base)]


def _close(got: list, expected: list, rel: float) -> bool:
    return len(got) == len(expected) and all(
        g is None if e is None else g == pytest.approx(e, rel=rel) for g, e in zip(got, expected))


def _start(run_dir):
    from transferlab.models import create_model
    from transferlab.runs import read_run_config

    config = read_run_config(run_dir)
    start = create_model(config.model, len(config.classes), weights=config.weights)
    return {n: p.detach() for n, p in start.named_parameters() if not start.is_new_param(n)}


def _both_call_sites(run_dir) -> tuple[list, list, str, str]:
    from transferlab.compare.drift import weight_change
    from transferlab.diagnostics.drift import drift_for_run

    report = weight_change(run_dir)
    drift = drift_for_run(run_dir, max_batches=1)
    return report.change, [g.weight_change for g in drift.groups], report.note, drift.note


def test_full_run_change_is_the_norm_ratio_by_hand(tiny_run):
    from transferlab.runs import load_run

    _, _, model, _ = load_run(tiny_run)
    effective = {n: p.detach() for n, p in model.named_parameters()}
    expected = _by_hand(model, effective, _start(tiny_run))
    report, drift, note, _ = _both_call_sites(tiny_run)
    assert note == "" and expected[-1] is None and all(v > 0 for v in expected[:-1])
    assert _close(report, expected, 1e-9) and _close(drift, expected, 1e-9)


def test_lora_run_change_is_that_of_the_merged_weights_by_hand(peft_runs):
    from peft.tuners.lora import LoraLayer

    from transferlab.runs import load_run
    from transferlab.strategies.peft_methods._base import plain_name

    _, _, model, _ = load_run(peft_runs["lora"])
    effective = {plain_name(n): p.detach().clone() for n, p in model.named_parameters() if not model.is_new_param(n)}
    merged_layers = 0
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            a = module.lora_A["default"].weight.detach()  # (r, in, 1, 1)
            b = module.lora_B["default"].weight.detach()  # (out, r, 1, 1)
            delta = (b.flatten(1) @ a.flatten(1)).reshape(module.get_base_layer().weight.shape)
            effective[f"{name}.weight"] += module.scaling["default"] * delta  # W + (alpha/r) B A
            merged_layers += bool(delta.abs().sum() > 0)
    assert merged_layers > 0  # training moved B away from zero: the merge changes something
    expected = _by_hand(model, effective, _start(peft_runs["lora"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report, drift, note, drift_note = _both_call_sites(peft_runs["lora"])
    assert note == drift_note == ""
    assert _close(report, expected, 1e-6) and _close(drift, expected, 1e-6)
    assert any(v and v > 0 for v in expected)
    # the measurement merged a copy: a model it is given keeps its LoRA layers and values
    from transferlab.diagnostics.weights import model_weight_change
    from transferlab.runs import read_run_config
    from transferlab.strategies import parse_strategy

    model_weight_change(model, model, parse_strategy(read_run_config(peft_runs["lora"]).strategy))
    after = dict(model.named_parameters())
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_adapter_run_has_no_weight_change_and_says_why(peft_runs):
    from transferlab.diagnostics.weights import ADAPTER_NOTE

    report, drift, note, drift_note = _both_call_sites(peft_runs["adapter"])
    assert report == drift == [None] * len(report)
    assert ADAPTER_NOTE in note and ADAPTER_NOTE in drift_note


def test_relative_weight_change_is_a_pure_measurement():
    from transferlab.diagnostics.weights import relative_weight_change

    w0 = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0]), "c": torch.zeros(2)}
    w = {"a": torch.tensor([3.0, 5.0]), "b": torch.tensor([1.0]), "c": torch.ones(2), "head": torch.ones(3)}
    got = relative_weight_change(w, w0, [["a", "b"], ["c"], ["head"]])
    assert got == [pytest.approx(1 / math.sqrt(26)), None, None]  # c: ||w0|| = 0; head: no w0


def test_reproducible_start(tiny_bert_dir, source_weights):
    from transferlab.diagnostics._common import has_reproducible_start
    from transferlab.models import list_models

    assert has_reproducible_start(list_models()[0], None)  # registry model: its pre-trained weights
    assert not has_reproducible_start(TINY_IMAGE_MODEL, None)  # timm architecture, random init
    assert not has_reproducible_start(TINY_IMAGE_MODEL, "")
    assert has_reproducible_start(TINY_IMAGE_MODEL, str(source_weights))  # timm with --weights
    assert has_reproducible_start(str(tiny_bert_dir), None)  # an HF directory carries its weights
    assert has_reproducible_start("hf:some/model", None)
