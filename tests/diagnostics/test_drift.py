"""Feature drift of a run: weight change and CKA per depth group, as data and from the CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from transferlab.cli import main
from transferlab.diagnostics.drift import drift, drift_for_run


def test_drift_for_run_reports_every_depth_group_in_order(tiny_run):
    result = drift_for_run(tiny_run, max_batches=2)
    from transferlab.runs import load_run

    _, _, model, _ = load_run(tiny_run)
    assert [g.name for g in result.groups] == [g.name for g in model.depth_groups]
    assert result.groups[-1].name == "head" and result.groups[-1].cka is None
    assert result.groups[-1].weight_change is None  # the head has no pre-trained value
    for g in result.groups[:-1]:
        assert g.weight_change > 0  # full fine-tuning moved every group
        assert -0.2 < g.cka <= 1.0 + 1e-6
    assert result.examples > 0 and result.note == ""
    assert json.loads(json.dumps(result.to_dict()))["groups"][0]["name"] == result.groups[0].name


def test_a_cache_shares_the_pretrained_outputs_and_changes_no_number(tiny_run, monkeypatch):
    from transferlab.diagnostics import drift as drift_module

    plain = drift_for_run(tiny_run, max_batches=2)
    calls = []
    counted = drift_module.group_outputs
    monkeypatch.setattr(drift_module, "group_outputs", lambda *a, **k: calls.append(1) or counted(*a, **k))
    cache: dict = {}
    first = drift_for_run(tiny_run, max_batches=2, cache=cache)
    assert len(calls) == 1 and len(cache) == 1  # the pre-trained model's outputs, kept
    second = drift_for_run(tiny_run, max_batches=2, cache=cache)
    assert len(calls) == 1  # not computed again: they came from the cache
    assert plain.to_dict() == first.to_dict() == second.to_dict()


def test_a_model_against_its_own_copy_has_no_drift(tiny_run):
    from torch.utils.data import DataLoader

    from transferlab.runs import load_run

    _, data, model, _ = load_run(tiny_run)
    loader = DataLoader(data.val, batch_size=32, collate_fn=data.collate)
    groups, _, _ = drift(model, copy.deepcopy(model), loader, torch.device("cpu"), max_batches=2)
    for g in groups[:-1]:
        assert g.weight_change == 0.0
        assert g.cka == pytest.approx(1.0, abs=1e-6)


def test_cli_drift_json(tiny_run, capsys, tmp_path):
    main(["diagnose", "drift", "--run", str(tiny_run), "--json", "--max-batches", "1",
          "--plot", str(tmp_path / "drift.png")])
    out = json.loads(capsys.readouterr().out)
    assert [set(g) for g in out["groups"]] == [{"name", "weight_change", "cka"}] * len(out["groups"])
    assert out["groups"][-1]["name"] == "head"
    assert (tmp_path / "drift.png").stat().st_size > 0


def test_report_sections_for_the_comparison_report(tiny_run):
    from types import SimpleNamespace

    from transferlab.diagnostics import report

    run = SimpleNamespace(run_dir=str(tiny_run), seed=0)
    results = SimpleNamespace(strategies=["full"], data="digits:5-9", finished_runs=lambda name: [run])
    ctx = SimpleNamespace(results=results, cache={}, source_data=None)
    cka = report.cka_section(ctx)
    assert cka.blocks[0].png.startswith(b"\x89PNG") and "full" in cka.data
    forgetting = report.forgetting_section(ctx)
    assert forgetting.data["full"]["mode"] == "agreement_proxy"
    # source data given to the report (compare --source-data, also with --report-only) measures forgetting
    measured = report.forgetting_section(SimpleNamespace(results=results, cache={}, source_data="digits:0-4"))
    f = measured.data["full"]
    assert f["mode"] == "source_accuracy" and f["forgetting"] == pytest.approx(f["accuracy_before"] - f["accuracy_after"])
    bn = report.bn_shift_section(ctx)
    assert bn.data["full"]["mean_skl"] >= 0
