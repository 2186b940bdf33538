"""The grid: every cell is an ordinary run, a failing cell is recorded, --resume re-runs nothing finished."""
from __future__ import annotations

import logging
import shutil

import pytest

from tests.compare.conftest import grid_args, load_json, run_folder
from transferlab.compare.grid import SCRATCH_SEARCH, safe_name, scratch_name, split_strategy_list
from transferlab.runs import run_state


def test_every_cell_is_a_run_dir(grid_dir):
    runs = grid_dir / "runs"
    for name in ["linear_probe", "full"] + [safe_name(scratch_name(r)) for r in SCRATCH_SEARCH]:
        assert run_state(runs / name / "0") == "finished", name
        assert (runs / name / "0" / "history.jsonl").is_file()
        assert (runs / name / "0" / "examples.safetensors").is_file()
    for name in ("report.md", "report.html", "results.csv", "results.json", "runs.csv", "grid.json"):
        assert (grid_dir / name).is_file(), name
    assert not list(grid_dir.rglob(".*.tmp")), "atomic writes leave no temporary files"


def test_scratch_is_same_model_entry_with_random_weights(grid_dir, tiny_weights):
    transfer = load_json(grid_dir / "runs" / "full" / "0" / "config.json")
    scratch = load_json(run_folder(grid_dir, "scratch") / "config.json")
    # every parameter at the base rate, with the selected recipe's BatchNorm mode and learning rate
    choice = load_json(grid_dir / "results.json")["scratch_choice"]
    assert scratch["model"] == transfer["model"] and scratch["strategy"] == "full:backbone_lr=1"
    assert scratch["train"]["bn_stats"] == choice["recipe"]["bn_stats"]
    assert scratch["train"]["lr"] == pytest.approx(transfer["train"]["lr"] * choice["recipe"]["lr_scale"])
    assert transfer["weights"] == str(tiny_weights)
    assert scratch["weights"] != transfer["weights"] and scratch["weights"].startswith(str(grid_dir.resolve()))
    assert scratch["data_options"] == transfer["data_options"]  # same inputs, same normalisation


def test_failing_run_is_recorded_and_the_others_complete(grid_dir):
    results = load_json(grid_dir / "results.json")
    status = {r["strategy"]: r for r in results["runs"]}
    assert status["freeze:k=50"]["status"] == "failed"
    assert "freeze" in status["freeze:k=50"]["error"] and "depth" in status["freeze:k=50"]["error"]
    scratch = results["scratch_choice"]["selected"]
    assert all(status[s]["status"] == "finished" for s in ("linear_probe", "full", scratch))
    assert (grid_dir / "runs" / safe_name("freeze:k=50") / "0" / "error.json").is_file()
    md = (grid_dir / "report.md").read_text()
    assert "failed" in md and "would freeze the head" in md


def test_unknown_strategy_is_refused_before_anything_runs(tmp_path, tiny_weights, capsys):
    from transferlab.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(grid_args(out, tiny_weights, "linear_probe,no_such_strategy"))
    assert exc.value.code == 2
    assert "no_such_strategy" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):  # a bad key of a known strategy too
        main(grid_args(out, tiny_weights, "full,l2sp:gamma=1"))
    assert not out.exists()
    with pytest.raises(SystemExit):  # missing source data too
        main(grid_args(out, tiny_weights, "full", "--source-data", str(tmp_path / "no_source")))
    assert "no_source: no such file or folder" in capsys.readouterr().err
    assert not out.exists()


def test_existing_grid_needs_resume(grid_dir, tiny_weights, capsys):
    from transferlab.cli import main

    with pytest.raises(SystemExit):
        main(grid_args(grid_dir, tiny_weights))
    assert "--resume" in capsys.readouterr().err


def test_resume_reruns_nothing_finished(grid_dir, tiny_weights, tmp_path, caplog):
    from transferlab.cli import main

    out = tmp_path / "copy"
    shutil.copytree(grid_dir, out)
    kept = out / "runs" / "linear_probe" / "0" / "metrics.json"
    before = kept.stat().st_mtime_ns
    full = out / "runs" / "full" / "0"
    original = load_json(full / "metrics.json")
    (full / "metrics.json").unlink()  # an unfinished run: its checkpoints are there, its metrics are not
    assert run_state(full) == "unfinished"
    with caplog.at_level(logging.INFO, logger="transferlab.compare"):
        assert main(grid_args(out, tiny_weights, "linear_probe,full,freeze:k=50", "--resume")) == 0
    assert kept.stat().st_mtime_ns == before
    resumed = load_json(full / "metrics.json")
    assert resumed["val"] == original["val"] and resumed["best_epoch"] == original["best_epoch"]
    text = caplog.text
    # 3 strategies + the baseline's 4 candidate recipes, 1 seed: 7 runs
    assert "run 1/7" in text and "finished earlier, kept" in text and "run 7/7" in text and "run 8/" not in text
    for name in ["linear_probe"] + [scratch_name(r) for r in SCRATCH_SEARCH]:  # every finished candidate kept too
        assert f"{name} (seed 0): finished earlier, kept" in caplog.messages, name
    assert "full (seed 0): finished earlier, kept" not in caplog.messages
    results = load_json(out / "results.json")
    assert {r["strategy"]: r["status"] for r in results["runs"]}["full"] == "finished"
    # the baseline's recipe, chosen again from the kept candidates, is the one the grid chose
    assert results["scratch_choice"] == load_json(grid_dir / "results.json")["scratch_choice"]


def test_split_strategy_list_keeps_spec_parameters_together():
    assert split_strategy_list("linear_probe, l2sp:alpha=0.1,beta=0.01,full") == \
        ["linear_probe", "l2sp:alpha=0.1,beta=0.01", "full"]
    assert split_strategy_list("discriminative:decay=0.5+l2sp:alpha=0.1,beta=0.01,freeze:k=4") == \
        ["discriminative:decay=0.5+l2sp:alpha=0.1,beta=0.01", "freeze:k=4"]


def test_safe_name_is_filesystem_safe_and_distinct():
    specs = ["freeze:k=4", "freeze:k=40", "discriminative:decay=0.5+l2sp:alpha=0.1,beta=0.01", "a/b:c=..", "full"]
    names = [safe_name(s) for s in specs]
    assert len(set(names)) == len(names)
    for n in names:
        assert "/" not in n and ":" not in n and not n.startswith(".") and len(n) <= 80
    assert safe_name("full") == "full"


def test_digits_demo_defaults_keep_pretrained_batchnorm_statistics_unless_told_otherwise():
    from transferlab.cli import build_parser
    from transferlab.cli.compare import grid_spec_from_args

    spec = grid_spec_from_args(build_parser().parse_args(["compare"]))
    assert spec.base.data == "digits" and spec.base.train.bn_stats == "frozen"
    assert spec.base.data_options.image_size == 64 and spec.base.train.epochs == 3
    spec = grid_spec_from_args(build_parser().parse_args(["compare", "--bn-stats", "auto", "--epochs", "1"]))
    assert spec.base.train.bn_stats == "auto" and spec.base.train.epochs == 1
    spec = grid_spec_from_args(build_parser().parse_args(["compare", "--data", "../shared/data/hymenoptera"]))
    assert spec.base.train.bn_stats == "auto" and spec.base.train.epochs == 5  # defaults only for digits


def test_the_library_builds_the_grid_the_cli_builds():
    from transferlab.cli import build_parser
    from transferlab.cli.compare import grid_spec_from_args
    from transferlab.compare import grid_spec

    for argv, kwargs in ((["compare"], {}),
                         (["compare", "--epochs", "1", "--seeds", "2", "--strategies", "full"],
                          {"epochs": 1, "seeds": 2, "strategies": "full"}),
                         (["compare", "--data", "/some/images", "--lr", "0.1"], {"data": "/some/images", "lr": 0.1})):
        assert grid_spec_from_args(build_parser().parse_args(argv)).to_dict() == grid_spec(**kwargs).to_dict()
    assert grid_spec().base.train.bn_stats == "frozen" and grid_spec().base.data_options.image_size == 64
    assert grid_spec(data="/some/images").base.data_options.image_size is None


def test_each_cell_starts_with_its_own_peak_memory(monkeypatch):
    import torch

    from transferlab.compare.grid import reset_peak_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, stood in for on a CPU one
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: calls.append(a))
    reset_peak_memory()
    assert calls == [()]
