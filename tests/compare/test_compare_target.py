"""`compare --target-data`: every cell gets the unlabelled target (the domain adaptation strategies adapt to it,
every run reports Deep Embedded Validation), and the report lists source-validation accuracy beside DEV's target
risk; a target that does not exist stops the command before anything is written."""
from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_IMAGE_MODEL


def _args(out, *extra, strategies="full,mcc,dann"):
    return ["compare", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-1", "--strategies", strategies,
            "--no-scratch", "--image-size", "32", "--max-train", "16", "--max-val", "8", "--epochs", "1",
            "--batch-size", "8", "--device", "cpu", "--out", str(out), *extra]


def test_every_cell_gets_the_target_and_the_report_lists_dev(tmp_path):
    from transferlab.cli import main

    out = tmp_path / "grid"
    assert main(_args(out, "--target-data", "digits:2-3")) == 0
    results = json.loads((out / "results.json").read_text())
    for strategy in ("full", "mcc", "dann"):
        run = out / "runs" / strategy / "0"
        config = json.loads((run / "config.json").read_text())
        assert config["strategy_options"]["target_data"] == "digits:2-3"
        risk = json.loads((run / "metrics.json").read_text())["dev"]["risk"]
        row = results["sections"]["target_selection"]["strategies"][strategy]
        assert row["dev_risk"][0] == pytest.approx(risk)  # the report's number is the run's
    section = results["sections"]["target_selection"]
    assert section["best_by_dev"] in ("full", "mcc", "dann") and section["target_data"] == "digits:2-3"
    assert "## Selecting for the target domain without its labels" in (out / "report.md").read_text()
    gap = results["sections"]["domain_gap"]  # the grid's data against its target, in each strategy's features
    assert all(len(gap[s]["the grid's data vs its target data"]["groups"]) >= 3 for s in ("full", "mcc", "dann"))


def test_a_grid_without_target_data_has_no_such_section(tmp_path):
    from transferlab.cli import main

    out = tmp_path / "plain"
    assert main(_args(out, strategies="full")) == 0
    assert "target_selection" not in json.loads((out / "results.json").read_text())["sections"]


def test_a_missing_target_is_refused_before_anything_is_written(tmp_path, capsys):
    from transferlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(_args(tmp_path / "grid", "--target-data", str(tmp_path / "nowhere")))
    assert exc.value.code == 2 and not (tmp_path / "grid").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
