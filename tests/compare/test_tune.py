"""`compare --tune`: equal Optuna budgets per strategy on validation, the chosen settings reported on test, an
exact resume after a SIGKILL in the middle of a trial, the search spaces and `--tune-space`."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compare.conftest import load_json
from tests.conftest import TINY_IMAGE_MODEL

STRATEGIES = "linear_probe,l2sp"
TRIALS = 3
ROOT = Path(__file__).resolve().parents[2]


def tune_args(out: Path, weights: Path, *extra: str) -> list[str]:
    # 60 training images, batch 32: 2 steps per epoch, 4 per run
    return ["compare", "--model", TINY_IMAGE_MODEL, "--weights", str(weights), "--data", "digits:0-2",
            "--strategies", STRATEGIES, "--epochs", "2", "--max-train", "60", "--image-size", "16",
            "--test-fraction", "0.2", "--tune", str(TRIALS), "--out", str(out), *extra]


def studies(out: Path) -> dict:
    import optuna

    from transferlab.compare.tune import counted

    found = {}
    for db in sorted((out / "tuning").glob("*.db")):
        study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
        found[db.stem] = (study, counted(study))
    return found


@pytest.fixture(scope="module")
def tuned_grid(tmp_path_factory, tiny_weights) -> Path:
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("tune") / "out"
    assert main(tune_args(out, tiny_weights)) == 0
    return out


def test_every_strategy_and_the_baseline_get_the_same_number_of_trials(tuned_grid):
    found = studies(tuned_grid)
    assert set(found) == {"linear_probe", "l2sp", "scratch"}
    for name, (study, spent) in found.items():
        assert len(spent) == TRIALS, name  # finished, pruned or failed: each spent the budget once
        assert len(study.trials) == TRIALS  # nothing interrupted, nothing re-asked
        for trial in study.trials:
            assert Path(trial.user_attrs["run_dir"]) == tuned_grid / "tuning" / name / f"trial{trial.number}"
        assert [t.state.name for t in study.trials].count("COMPLETE") >= 1
    summary = load_json(tuned_grid / "tuning" / "summary.json")
    assert {e["budget"] for e in summary["entries"].values()} == {TRIALS}
    # under --tune the baseline's 4-recipe search is replaced: its default entry is one recipe
    assert load_json(tuned_grid / "grid.json")["scratch_search"] == [{"bn_stats": "auto", "lr_scale": 1.0}]


def test_the_chosen_setting_is_the_best_validation_trial_and_the_tuned_runs_use_it(tuned_grid):
    from transferlab.compare.grid import safe_name

    summary = load_json(tuned_grid / "tuning" / "summary.json")
    found = studies(tuned_grid)
    for name in ("linear_probe", "l2sp"):
        study, _ = found[name]
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        best = max(done, key=lambda t: (t.value, -t.number))
        chosen = summary["entries"][name]["best"]
        assert chosen["trial"] == best.number and chosen["val_accuracy"] == best.value
        assert chosen["params"] == best.params
        # the trial's own run selected on validation: its metrics.json holds the value the study was told
        trial_metrics = load_json(tuned_grid / "tuning" / name / f"trial{best.number}" / "metrics.json")
        assert trial_metrics["val"]["accuracy"] == best.value
        config = load_json(tuned_grid / "tuned" / "runs" / safe_name(name) / "0" / "config.json")
        assert config["train"]["lr"] == pytest.approx(best.params["lr"])
        assert config["train"]["weight_decay"] == pytest.approx(best.params["weight_decay"])
        assert config["strategy"] == best.user_attrs["strategy"]
        if name == "l2sp":
            assert config["strategy"].startswith("l2sp:alpha=")
            assert f"alpha={best.params['l2sp.alpha']}" in config["strategy"]
        assert load_json(tuned_grid / "tuned" / "runs" / safe_name(name) / "0" / "metrics.json")["test"]


def test_the_report_sets_the_default_and_the_tuned_comparison_side_by_side_on_test(tuned_grid):
    results = load_json(tuned_grid / "results.json")
    assert results["metric"] == "test_accuracy"
    section = results["sections"]["tuning"]
    for name in ("linear_probe", "l2sp", "scratch"):
        row = section["strategies"][name]
        assert row["trials"] == TRIALS and row["seconds"] > 0
        assert row["default"]["mean"] is not None and row["tuned"]["mean"] is not None
        assert len(row["tuned"]["interval"]) == 2 and row["tuned_minus_default"] is not None
        assert row["chosen"]["params"]
        tuned_metrics = load_json(Path(results["tuning"]["entries"][name]["trials"][0]["run_dir"]).parents[2]
                                  / "tuned" / "runs" / _folder(tuned_grid, name) / "0" / "metrics.json")
        assert row["tuned"]["mean"] == pytest.approx(tuned_metrics["test"]["accuracy"])
    assert isinstance(section["best_changed"], bool) or section["best_default"] is None
    report = (tuned_grid / "report.md").read_text()
    assert "## Default and tuned hyperparameters" in report and "tuned - default" in report
    assert "Every strategy, and the from-scratch baseline, got the same budget" in report  # it was tuned too


def _folder(out: Path, name: str) -> str:
    from transferlab.compare.grid import safe_name

    if name != "scratch":
        return safe_name(name)
    return next(p.name for p in (out / "tuned" / "runs").iterdir() if p.name.startswith("scratch"))


def test_a_kill_in_the_middle_of_a_trial_resumes_the_study_and_chooses_as_an_uninterrupted_grid(
        tuned_grid, tiny_weights, tmp_path):
    from transferlab.cli import main

    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERLAB_FAULT"}
    # SIGKILL at step 3 (epoch 2) of l2sp's second trial: linear_probe's study is done, l2sp has one trial
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0",
               TRANSFERLAB_FAULT="kill_at_step:3", TRANSFERLAB_FAULT_SCOPE="trial:l2sp:1")
    proc = subprocess.run([sys.executable, "-m", "transferlab", *tune_args(out, tiny_weights)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    before = studies(out)
    assert len(before["linear_probe"][1]) == TRIALS
    kept = [(t.number, t.params, t.value) for t in before["l2sp"][1]]
    assert [n for n, _, _ in kept] == [0]
    assert before["l2sp"][0].trials[1].state.name == "RUNNING"  # the killed one
    assert main(tune_args(out, tiny_weights, "--resume")) == 0
    after = studies(out)
    study, spent = after["l2sp"]
    assert len(spent) == TRIALS and study.trials[1].state.name == "FAIL"  # interrupted: marked, not counted
    assert "error" not in study.trials[1].user_attrs
    assert [(t.number, t.params, t.value) for t in spent][:1] == kept  # the finished trial was kept, not re-run
    assert [t.number for t in spent] == [0, 2, 3]
    assert len(after["linear_probe"][1]) == TRIALS and len(after["linear_probe"][0].trials) == TRIALS
    # the same seeded proposals, trial for trial, as the uninterrupted grid; so the same choice
    reference = studies(tuned_grid)
    for name in ("linear_probe", "l2sp", "scratch"):
        assert [t.params for t in after[name][1]] == [t.params for t in reference[name][1]], name
        assert [t.value for t in after[name][1]] == [t.value for t in reference[name][1]], name
    ours = load_json(out / "tuning" / "summary.json")["entries"]
    theirs = load_json(tuned_grid / "tuning" / "summary.json")["entries"]
    for name in ours:
        assert ours[name]["best"]["params"] == theirs[name]["best"]["params"]
        assert ours[name]["best"]["strategy"] == theirs[name]["best"]["strategy"]
    assert ours["l2sp"]["interrupted"] == 1


def test_a_trial_below_the_median_is_pruned_and_its_run_stops_cleanly(tmp_path, tiny_weights):
    import optuna

    from transferlab.compare.tune import TuneTask, distributions, open_study, tune_task
    from transferlab.compare.tune_space import common_space
    from transferlab.runs import RunConfig
    from transferlab.data import DataOptions
    from transferlab.training.config import TrainConfig

    base = RunConfig(model=TINY_IMAGE_MODEL, data="digits:0-2", strategy="linear_probe", weights=str(tiny_weights),
                     train=TrainConfig(epochs=2), data_options=DataOptions(max_train=60, image_size=16))
    space = common_space(base.train.lr)
    task = TuneTask("linear_probe", "linear_probe", space, base, trials=2, seed=0, root=tmp_path / "tuning")
    study = open_study(task)
    # a finished trial that was perfect at every epoch: the median any real trial falls below at epoch 1
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3, "weight_decay": 0.01},
                                              distributions=distributions(space), value=1.0,
                                              intermediate_values={1: 1.0, 2: 1.0}))
    tune_task(task)
    trial = study.trials[1]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [1]
    run_dir = tmp_path / "tuning" / "linear_probe" / "trial1"
    assert (run_dir / "pruned.json").is_file() and not (run_dir / "metrics.json").exists()
    assert len(json.loads(json.dumps([l for l in (run_dir / "history.jsonl").read_text().splitlines()]))) == 1
    assert len(study.trials) == 2  # pruned trials spend the budget: none asked after it


def test_every_strategy_declares_a_space_of_its_own_parameters():
    from transferlab.strategies import SpaceContext, Tunable, list_strategies

    ctx = SpaceContext(depth_groups=7, epochs=5)
    spaces = {}
    for cls in list_strategies():
        space = cls.search_space(ctx)
        names = {f.name for f in dataclasses.fields(cls.Params)}
        assert set(space) <= names, cls.name
        for key, tunable in space.items():
            assert isinstance(tunable, Tunable)
            default = next(f.default for f in dataclasses.fields(cls.Params) if f.name == key)
            if tunable.choices is not None:
                assert default in tunable.choices, (cls.name, key)
            else:
                assert isinstance(default, float) or tunable.is_int, (cls.name, key)
        spaces[cls.name] = space
    assert set(spaces["discriminative"]) == {"decay"}
    assert spaces["l2sp"]["alpha"].log and spaces["l2sp"]["beta"].log
    assert set(spaces["lp_ft"]) >= {"lp_epochs"} and spaces["lp_ft"]["lp_epochs"].high == 4
    # two epochs: one of each phase is the only setting that runs (the default lp_epochs=2 leaves no fine-tuning)
    lp_ft = next(cls for cls in list_strategies() if cls.name == "lp_ft")
    assert lp_ft.search_space(SpaceContext(depth_groups=7, epochs=2))["lp_epochs"].choices == (1,)
    assert spaces["lora"]["r"].choices == (4, 8, 16)
    assert spaces["freeze"]["k"].high == 6  # every backbone group, never the head


def test_tune_space_good_and_bad():
    from transferlab.compare.tune_space import apply_params, parse_space, strategy_space
    from transferlab.errors import ConfigError
    from transferlab.strategies import SpaceContext

    parsed = parse_space("l2sp:alpha=1e-3..1:log,beta=0.001..0.01,lr=1e-4..1e-2:log,lora:r=4|8,scratch:bn_stats=auto")
    assert parsed["l2sp"]["alpha"].log and parsed["l2sp"]["alpha"].low == 1e-3
    assert not parsed["l2sp"]["beta"].log and parsed["lora"]["r"].choices == (4, 8)
    assert parsed["scratch"]["bn_stats"].choices == ("auto",)
    space = strategy_space("l2sp", SpaceContext(7, 2), lr=1e-3, overrides=parsed)
    assert space["lr"].high == 1e-2 and space["l2sp.alpha"].low == 1e-3 and set(space) == {
        "lr", "weight_decay", "l2sp.alpha", "l2sp.beta"}
    # a parameter the spec fixes is not searched
    assert set(strategy_space("l2sp:alpha=0.5", SpaceContext(7, 2), lr=1e-3)) == {"lr", "weight_decay", "l2sp.beta"}
    assert apply_params("freeze:k=2+l2sp", {"l2sp.alpha": 0.25, "lr": 1.0}) == "freeze:k=2+l2sp:alpha=0.25"
    for bad in ("alpha=1..2", "l2sp:alpha=2..1", "l2sp:alpha=0..1:log", "l2sp:gamma=1..2", "nosuch:x=1..2",
                "l2sp:alpha=a..b", "lora:r=4.5..8", "l2sp:alpha", "l2sp:alpha=1..2,alpha=1..3", "adapter:kind=1..2"):
        with pytest.raises(ConfigError):
            parse_space(bad)


def test_a_bad_tune_space_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_weights, capsys):
    from transferlab.cli import main

    out = tmp_path / "bad"
    for extra in (["--tune-space", "l2sp:alpha=1..0"], ["--tune-space", "full:backbone_lr=0.1..1"],
                  ["--tune-space", "l2sp:alpha=nan..1"]):
        with pytest.raises(SystemExit) as exc:
            main(tune_args(out, tiny_weights, *extra))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "tune-space" in err[0], err
        assert not out.exists()
    with pytest.raises(SystemExit) as exc:  # Ray runs the trials (test_tune_ray.py), sized by --cpus-per-cell
        main(tune_args(out, tiny_weights, "--executor", "ray", "--cpus-per-cell", "0"))
    assert exc.value.code == 2 and "--cpus-per-cell" in capsys.readouterr().err and not out.exists()
