"""`compare --tune --executor ray`: the trials as Ray tasks on a local Ray instance, asked and told by the driver,
choose what a sequential local grid with the same seed chooses, trial for trial; and why a study's first trials may
run at once while the later ones wait for those before them."""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import pytest
import torch

from tests.compare.conftest import LogLines, load_json
from tests.compare.test_compare_ray import _ray_tmpdir
from tests.conftest import TINY_IMAGE_MODEL

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='Ray is not installed (pip install "transferlab[cluster]")')
ENTRIES = ("linear_probe", "l2sp")
TRIALS = 2


def tune_args(out: Path, weights: Path, *extra: str) -> list[str]:
    return ["compare", "--model", TINY_IMAGE_MODEL, "--weights", str(weights), "--data", "digits:0-2",
            "--strategies", ",".join(ENTRIES), "--no-scratch", "--epochs", "1", "--max-train", "60",
            "--image-size", "16", "--lr", "0.01", "--test-fraction", "0.2", "--tune", str(TRIALS), "--out", str(out),
            *extra]


@pytest.fixture(scope="module")
def tuned_grids(tmp_path_factory, tiny_weights):
    """The tuned grid run here (one torch thread, as each Ray task has with --cpus-per-cell 1), and the same grid
    with --executor ray on a local instance of 2 CPUs that the command starts and shuts down."""
    import ray

    from transferlab.cli import main

    root = tmp_path_factory.mktemp("tune_ray")
    local, on_ray = root / "local", root / "ray"
    ray_dir, fallback = _ray_tmpdir(tmp_path_factory)
    threads = torch.get_num_threads()
    compare_logger, handler = logging.getLogger("transferlab.compare"), LogLines()
    level = compare_logger.level
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(ray_dir))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        try:
            torch.set_num_threads(1)
            assert main(tune_args(local, tiny_weights)) == 0
            mp.setattr(torch, "get_num_threads", lambda: 2)
            compare_logger.addHandler(handler)  # this process's own log lines (the tasks' are their workers')
            compare_logger.setLevel(logging.INFO)
            assert main(tune_args(on_ray, tiny_weights, "--executor", "ray", "--cpus-per-cell", "1")) == 0
            still_up = ray.is_initialized()
        finally:
            compare_logger.removeHandler(handler)
            compare_logger.setLevel(level)
            torch.set_num_threads(threads)
            if ray.is_initialized():  # only after a failure above
                ray.shutdown()
    yield on_ray, local, still_up, handler.lines
    if fallback:
        shutil.rmtree(ray_dir, ignore_errors=True)


def _study(out: Path, key: str):
    import optuna

    return optuna.load_study(study_name=key, storage=f"sqlite:///{out / 'tuning' / f'{key}.db'}")


@needs_ray
@pytest.mark.slow  # starts a local Ray instance and tunes two grids: minutes on 2 cores
def test_ray_trials_choose_as_a_sequential_local_grid(tuned_grids):
    from transferlab.compare.grid import safe_name
    from transferlab.compare.tune import counted

    on_ray, local, still_up, lines = tuned_grids
    assert not still_up  # the command shut down the instance it started
    # the trials ran in the Ray tasks: this process asked and told, and ran none of them (execute_trial logs each)
    assert not [line for line in lines if ": trial " in line and line.startswith("tuning ")], lines
    assert "Ray: using the instance this process is already connected to" in lines  # one instance for it all
    ours, theirs = load_json(on_ray / "tuning" / "summary.json"), load_json(local / "tuning" / "summary.json")
    for name in ENTRIES:
        ray_trials, local_trials = counted(_study(on_ray, name)), counted(_study(local, name))
        assert len(ray_trials) == TRIALS == len(_study(on_ray, name).trials)
        # the same seeded proposals, the same runs (one thread each), so the same values and choice
        assert [(t.params, t.state.name, t.value) for t in ray_trials] == \
            [(t.params, t.state.name, t.value) for t in local_trials], name
        for t in ray_trials:  # each trial's run folder was written by its Ray task
            assert Path(t.user_attrs["run_dir"]) == on_ray.absolute() / "tuning" / name / f"trial{t.number}"
            assert (Path(t.user_attrs["run_dir"]) / "history.jsonl").is_file()
        assert ours["entries"][name]["best"]["params"] == theirs["entries"][name]["best"]["params"]
        assert ours["entries"][name]["best"]["strategy"] == theirs["entries"][name]["best"]["strategy"]
        tuned = [load_json(out / "tuned" / "runs" / safe_name(name) / "0" / "metrics.json") for out in (on_ray, local)]
        assert tuned[0]["test"] == tuned[1]["test"] and tuned[0]["val"] == tuned[1]["val"]
        assert tuned[0]["config"]["train"]["lr"] == ours["entries"][name]["best"]["lr"]
    assert load_json(on_ray / "results.json")["sections"]["tuning"]["strategies"].keys() >= set(ENTRIES)
    report = (on_ray / "report.md").read_text()  # --no-scratch: the budget sentence names no baseline
    assert "Every strategy got the same budget" in report and "from-scratch baseline, got" not in report


def test_a_studys_first_trials_may_be_asked_at_once_and_the_later_ones_may_not(tmp_path):
    """What ray_tune relies on, with Optuna alone: trials asked while those before them run get the proposals a
    sequential study gives only below the pruner's start-up count (TPE's random start); a TPE trial asked early
    learns from fewer finished trials and proposes something else."""
    from transferlab.compare.ray_tune import _may_ask, parallel_trials
    from transferlab.compare.tune import TuneTask, ask_trial, open_study, startup_trials
    from transferlab.compare.tune_space import common_space
    from transferlab.runs import RunConfig

    trials = 9
    window = parallel_trials(trials)
    assert 1 < window < startup_trials(trials) < trials

    def task(folder: str) -> TuneTask:
        return TuneTask("l2sp", "l2sp", common_space(1e-2), RunConfig(model=TINY_IMAGE_MODEL, data="digits"),
                        trials, seed=0, root=tmp_path / folder)

    def value(trial) -> float:  # a smooth objective: the nearer lr is to 1e-2, the better
        return -abs(trial.params["lr"] - 1e-2)

    def run(folder: str, at_once: int) -> list[dict]:
        t = task(folder)
        study = open_study(t)
        asked = [ask_trial(t, study) for _ in range(at_once)]  # running together
        for trial in asked:
            study.tell(trial, value(trial))
        for _ in range(trials - at_once):
            trial = ask_trial(t, study)
            study.tell(trial, value(trial))
        return [tr.params for tr in study.trials]

    sequential = run("sequential", 1)
    assert run("window", window) == sequential
    free = run("free", startup_trials(trials) + 1)  # the first TPE trial asked before the random ones finished
    assert free[:startup_trials(trials)] == sequential[:startup_trials(trials)]
    assert free[startup_trials(trials)] != sequential[startup_trials(trials)]
    # the driver's rule: a second trial while one runs only inside the window, never past the budget
    t = task("rule")
    study = open_study(t)
    assert _may_ask(t, study, running=window - 1) and not _may_ask(t, study, running=window)
    assert not _may_ask(TuneTask("l2sp", "l2sp", {}, t.base, 2, 0, tmp_path / "rule2"), study, running=2)
