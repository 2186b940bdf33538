"""`finetune --tune TRIALS [--tune-space SPEC]`: one strategy's Optuna study on validation accuracy, then the final
run with the best setting. The engine is `compare --tune`'s (tune.py): TPE seeded per trial, median pruning on each
epoch's validation accuracy, the study in a SQLite file that a killed run continues with --resume.

OUT/                             the final run: an ordinary run folder (evaluate, predict, export read it)
OUT/tune.json                    the study's summary: every trial, the best one's setting, the tuning time
OUT/tuning/<strategy>.db         the study (the strategy spec made folder-safe)
OUT/tuning/<strategy>/trial<N>/  trial N's run (pruned.json or error.json if it stopped)
OUT/tuning/request.json          what was asked (strategy, budget, --tune-space, the base config), which --resume
                                 continues; and the trial whose setting the final run trains, once it started

The final run trains the best trial's configuration with the same seed, so on the same machine it repeats that
trial's run and its validation accuracy is the study's best value.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from transferlab.compare.grid import safe_name
from transferlab.compare.tune import TUNING, TuneTask, pruner_startup, space_context, startup_trials, study_summary, \
    trial_config, tune_task
from transferlab.compare.tune_space import TuneSpec, check_overrides, spec_parts, strategy_space
from transferlab.errors import ConfigError, TrainingError
from transferlab.runs import RESUME_MAY_DIFFER, RunCaches, RunConfig, check_run_folder, finetune, \
    resume_differences, run_state, with_absolute_paths
from transferlab.safe_io import atomic_write_json

logger = logging.getLogger(__name__)

SUMMARY = "tune.json"  # OUT/tune.json
REQUEST = "request.json"  # OUT/tuning/request.json


def tune_finetune(config: RunConfig, out: str | Path, trials: int, space: str | None = None, resume: bool = False,
                  overwrite: bool = False, given: set[str] | None = None, callbacks=None) -> tuple[dict, dict]:
    """Tune `config.strategy` (TRIALS trials, --tune-space `space`), then train the best setting into `out`.
    Every check comes before anything is written. Returns (the final run's metrics, OUT/tune.json's summary).
    `callbacks`: the final run's (a tracker); `given`: the run options the user passed (--resume's check)."""
    config, out = check_run_folder(config, out, resume=False, overwrite=True, dry=True)  # the spec, paths, model
    request = _read_request(out) if resume else None
    if resume:
        config, space = _resumed_request(out, request, config, space, given)
    else:
        check_run_folder(config, out, resume=False, overwrite=overwrite, given=given, dry=True)
    tune = TuneSpec(trials=trials, space=space or "")  # TRIALS >= 1, a readable --tune-space
    named = {name for name, _ in spec_parts(config.strategy)}
    if set(tune.overrides) - named:
        raise ConfigError(f"--tune-space names {', '.join(sorted(set(tune.overrides) - named))}, not a strategy of "
                          f"--strategy {config.strategy!r} ({', '.join(sorted(named))})")
    check_overrides(tune.overrides, [config.strategy], scratch=False)  # what the spec fixes is not searched
    task = TuneTask(config.strategy, safe_name(config.strategy),
                    strategy_space(config.strategy, space_context(config), config.train.lr, tune.overrides),
                    config, tune.trials, config.train.seed, out / TUNING)
    # ---- from here on, files are written
    if not resume:
        _start(config, out, tune, overwrite)
        request = {"strategy": config.strategy, "space": tune.space, "base": config.to_dict()}
        atomic_write_json(out / TUNING / REQUEST, request)
    caches = RunCaches()  # decoded images and frozen-prefix outputs, shared by the trials and the final run
    tune_task(task, caches)
    summary = study_summary(task)
    best = summary["best"]
    if best is None:
        raise TrainingError(f"--tune: none of the {summary['counted']} trials finished (see {out / TUNING}); "
                            "the last error: " + next((r["error"] for r in reversed(summary["trials"]) if r["error"]),
                                                      "none"))
    metrics = _final_run(task, best, out, request, caches, callbacks)
    summary = {**summary, "trials_budget": tune.trials, "tune_space": tune.space, "seed": task.seed,
               "sampler": f"TPE (seeded per trial; random for the first {startup_trials(tune.trials)})",
               "pruner": f"median of the finished trials' validation accuracy per epoch (after "
                         f"{pruner_startup(tune.trials)} finished)",
               "objective": "validation accuracy of the run's selected epoch",
               "tuning_seconds": summary["seconds"], "final_run": str(out),
               "final_val_accuracy": metrics["val"]["accuracy"]}
    atomic_write_json(out / SUMMARY, summary)
    return metrics, summary


def _read_request(out: Path) -> dict:
    path = out / TUNING / REQUEST
    if not path.is_file():
        raise ConfigError(f"--resume: {out} holds no tuning to continue ({TUNING}/{REQUEST} is missing); run without "
                          "--resume to start one")
    return json.loads(path.read_text(encoding="utf-8"))


def _resumed_request(out: Path, request: dict, config: RunConfig, space: str | None,
                     given: set[str] | None) -> tuple[RunConfig, str]:
    """The saved base config and --tune-space, refusing what the arguments contradict (as a run's --resume)."""
    saved = with_absolute_paths(RunConfig.from_dict(request["base"]))
    differences = resume_differences(saved, config, given)
    if space is not None and space.strip() != request["space"]:
        differences["tune_space"] = (request["space"], space.strip())
    if differences:
        listed = "; ".join(f"--{k.split('.')[-1].replace('_', '-')} {old!r} in the tuning, {new!r} now"
                           for k, (old, new) in differences.items())
        raise ConfigError(f"--resume: the arguments contradict the tuning in {out}: {listed}; drop them to continue "
                          "it as it was, or start a new one in another --out")
    for key in RESUME_MAY_DIFFER:  # where it computes, how often it checkpoints: the new value when given
        section, name = key.split(".")
        if given is None or key in given:
            setattr(getattr(saved, section), name, getattr(getattr(config, section), name))
    return saved, request["space"]


def _start(config: RunConfig, out: Path, tune: TuneSpec, overwrite: bool) -> None:
    """A new tuning in `out`: --overwrite removes a run (and its tuning) there; the base config marks the folder as
    a run (an unfinished one, until the final run replaces it), so that the final run may be written into it."""
    if overwrite:
        if (out / TUNING).is_dir() and (out / TUNING / REQUEST).is_file():  # only a tuning of ours
            shutil.rmtree(out / TUNING)
        (out / SUMMARY).unlink(missing_ok=True)
        check_run_folder(config, out, resume=False, overwrite=True)  # the run's own files
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    logger.info("tuning %s: %d trial(s) on validation accuracy, then the final run in %s", config.strategy,
                tune.trials, out)


def _final_run(task: TuneTask, best: dict, out: Path, request: dict, caches: RunCaches, callbacks) -> dict:
    """The best setting trained into `out`: kept if it finished, continued if it was interrupted, else started
    (again: a --resume that added trials may have found a better one)."""
    cfg = trial_config(task, best["params"])
    started = request.get("final_trial") == best["trial"]
    state = run_state(out)
    if started and state == "finished":
        logger.info("tuning %s: the final run (trial %d's setting) finished earlier, kept", task.entry, best["trial"])
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    resume = started and state == "unfinished" and (out / "checkpoint" / "last.safetensors").is_file()
    if not started:
        request["final_trial"] = best["trial"]
        atomic_write_json(out / TUNING / REQUEST, request)
    logger.info("tuning %s: the final run with trial %d's setting (validation accuracy %.4f): %s, lr %.4g, "
                "weight decay %.4g", task.entry, best["trial"], best["val_accuracy"], cfg.strategy, cfg.train.lr,
                cfg.train.weight_decay)
    torch.manual_seed(cfg.train.seed)  # as the trial's run was started
    return finetune(cfg, out, resume=resume, overwrite=not resume, callbacks=callbacks, caches=caches)
