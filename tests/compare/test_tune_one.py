"""`finetune --tune`: one strategy's study on validation, the best setting trained into an ordinary run folder with
the study's summary beside it, a SIGKILL in the middle of a trial resumed to the same choice, and bad input refused
in one line before anything is written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compare.conftest import load_json
from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli

TRIALS = 3
ROOT = Path(__file__).resolve().parents[2]


def finetune_args(out: Path, weights: Path, *extra: str, strategy: str = "l2sp") -> list[str]:
    # 60 training images, batch 32: 2 steps per run (1 epoch); lr searched over 1e-3..1e-1
    return ["finetune", "--model", TINY_IMAGE_MODEL, "--weights", str(weights), "--data", "digits:0-2",
            "--strategy", strategy, "--epochs", "1", "--max-train", "60", "--image-size", "16", "--lr", "0.01",
            "--out", str(out), *extra]


def study(out: Path, key: str = "l2sp"):
    import optuna

    return optuna.load_study(study_name=key, storage=f"sqlite:///{out / 'tuning' / f'{key}.db'}")


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, tiny_weights) -> Path:
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("tune_one") / "run"
    assert main(finetune_args(out, tiny_weights, "--tune", str(TRIALS))) == 0
    return out


def test_the_best_trials_setting_is_trained_into_an_ordinary_run_folder(tuned_run, capsys, tmp_path):
    from transferlab.compare.tune import counted

    s = study(tuned_run)
    spent = counted(s)
    assert len(spent) == TRIALS == len(s.trials)
    done = [t for t in s.trials if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: (t.value, -t.number))
    assert set(best.params) == {"lr", "weight_decay", "l2sp.alpha", "l2sp.beta"}
    # the final run is the best trial's configuration: same setting, same seed, so the same run
    config = load_json(tuned_run / "config.json")
    assert config["strategy"] == best.user_attrs["strategy"]
    assert config["train"]["lr"] == pytest.approx(best.params["lr"])
    assert config["train"]["weight_decay"] == pytest.approx(best.params["weight_decay"])
    metrics = load_json(tuned_run / "metrics.json")
    assert metrics["val"]["accuracy"] == best.value
    trial_dir = Path(best.user_attrs["run_dir"])
    assert trial_dir == tuned_run / "tuning" / "l2sp" / f"trial{best.number}"
    assert (tuned_run / "checkpoint" / "best.safetensors").read_bytes() == \
        (trial_dir / "checkpoint" / "best.safetensors").read_bytes()
    # the study's summary in the run folder
    summary = load_json(tuned_run / "tune.json")
    assert summary["best"]["trial"] == best.number and summary["best"]["params"] == best.params
    assert summary["counted"] == TRIALS and len(summary["trials"]) == TRIALS
    assert summary["tuning_seconds"] > 0 and summary["final_val_accuracy"] == best.value
    assert set(summary["space"]) == set(best.params)
    # evaluate reads it as any run
    code, out, err = run_cli(["evaluate", "--run", str(tuned_run)], capsys)
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(metrics["val"]["accuracy"])
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    image = tmp_path / "digit.png"
    Image.fromarray((load_digits().images[0] * 15).astype(np.uint8)).convert("RGB").save(image)
    code, out, err = run_cli(["predict", "--run", str(tuned_run), str(image)], capsys)
    assert code == 0, err
    label, probability, name, error = out.splitlines()[1].split("\t")
    assert label in metrics["classes"] and 0 < float(probability) <= 1 and name == str(image) and not error


def test_a_kill_in_the_middle_of_a_trial_resumes_the_study_to_the_same_choice(tuned_run, tiny_weights, tmp_path):
    from transferlab.cli import main
    from transferlab.compare.tune import counted

    out = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERLAB_FAULT"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0",
               TRANSFERLAB_FAULT="kill_at_step:1", TRANSFERLAB_FAULT_SCOPE="trial:l2sp:1")
    proc = subprocess.run([sys.executable, "-m", "transferlab",
                           *finetune_args(out, tiny_weights, "--tune", str(TRIALS))],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    before = study(out)
    assert [t.state.name for t in before.trials] == ["COMPLETE", "RUNNING"]
    assert not (out / "metrics.json").exists() and not (out / "tune.json").exists()
    assert main(finetune_args(out, tiny_weights, "--tune", str(TRIALS), "--resume")) == 0
    after = study(out)
    spent = counted(after)
    assert after.trials[1].state.name == "FAIL" and [t.number for t in spent] == [0, 2, 3]
    reference = counted(study(tuned_run))
    assert [(t.params, t.value) for t in spent] == [(t.params, t.value) for t in reference]
    ours, theirs = load_json(out / "tune.json"), load_json(tuned_run / "tune.json")
    assert ours["best"]["params"] == theirs["best"]["params"] and ours["interrupted"] == 1
    assert load_json(out / "metrics.json")["val"] == load_json(tuned_run / "metrics.json")["val"]
    # a finished tuning resumed again: nothing re-run, the final run kept
    mtime = (out / "metrics.json").stat().st_mtime_ns
    assert main(finetune_args(out, tiny_weights, "--tune", str(TRIALS), "--resume")) == 0
    assert (out / "metrics.json").stat().st_mtime_ns == mtime and len(study(out).trials) == TRIALS + 1


@pytest.mark.parametrize("extra, words", [
    (["--tune", "0"], "--tune must be an integer >= 1"),
    (["--tune", "2", "--tune-space", "l2sp:alpha=1..0"], "--tune-space"),
    (["--tune", "2", "--tune-space", "garbage"], "cannot read 'garbage'"),
    (["--tune", "2", "--tune-space", "lora:r=4|8"], "not a strategy of --strategy"),
    (["--tune-space", "l2sp:alpha=1e-3..1:log"], "--tune-space needs --tune"),
    (["--tune", "2", "--resume"], "holds no tuning to continue"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_weights, capsys, extra, words):
    out = tmp_path / "bad"
    code, _, err = run_cli(finetune_args(out, tiny_weights, *extra), capsys)
    assert code == 2 and words in error_line(err)
    assert not out.exists()


def test_a_run_already_in_out_needs_resume_or_overwrite(tuned_run, tiny_weights, capsys):
    before = sorted(p.name for p in tuned_run.iterdir())
    code, _, err = run_cli(finetune_args(tuned_run, tiny_weights, "--tune", "2"), capsys)
    assert code == 2 and "--overwrite" in error_line(err)
    code, _, err = run_cli(finetune_args(tuned_run, tiny_weights, "--tune", "2", "--resume",
                                         "--tune-space", "l2sp:alpha=1e-2..1:log"), capsys)
    assert code == 2 and "contradict" in error_line(err)
    assert sorted(p.name for p in tuned_run.iterdir()) == before


def test_a_strategy_without_parameters_of_its_own_tunes_learning_rate_and_weight_decay(tmp_path, tiny_weights):
    # as `compare --tune` does: linear_probe has no parameters of its own, so its study searches lr and wd
    from transferlab.cli import main

    out = tmp_path / "probe"
    assert main(finetune_args(out, tiny_weights, "--tune", "2", strategy="linear_probe")) == 0
    s = study(out, "linear_probe")
    assert all(set(t.params) == {"lr", "weight_decay"} for t in s.trials)
    assert len({t.params["lr"] for t in s.trials}) == 2  # two settings tried, not one default twice
    assert load_json(out / "tune.json")["best"]["params"].keys() == {"lr", "weight_decay"}
