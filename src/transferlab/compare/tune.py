"""`--tune TRIALS`: every strategy (and the from-scratch baseline) gets the same number of Optuna trials on
validation accuracy before the comparison (Li et al. 2020, "Rethinking the Hyperparameters for Fine-tuning":
strategies compared at their defaults rank differently from strategies compared at their best).

DIR/tuning/<entry>.db              one SQLite Optuna study per grid entry (the spec made folder-safe; `scratch`)
DIR/tuning/<entry>/trial<N>/       trial N's run folder (an ordinary run; pruned.json or error.json if it stopped)
DIR/tuning/summary.json            every study's trials, its best trial and the setting chosen
DIR/tuned/runs/<entry>/<seed>/     the chosen setting over the grid's seeds, reported on test

The sampler is TPE, re-created before each trial with a seed derived from the grid's seed, the entry and the
trial's place in the budget, so the proposals are a function of (seed, the trials finished so far): a grid that
was killed and resumed proposes what an uninterrupted one proposes. Finished (and pruned, and failed) trials stay
in the study; a trial left RUNNING by a kill is marked FAIL (`interrupted`) on resume and does not count, so its
place in the budget is asked again. A MedianPruner stops a trial whose validation accuracy at an epoch is below
the median of the finished trials' at that epoch.

A trial is asked (ask_trial), run (execute_trial) and told (tell_trial) in three steps, so that the asking and
telling process need not be the running one: `--jobs N` workers do all three; under `--executor ray` the driver asks
and tells and a Ray task runs (ray_tune.py). `finetune --tune` runs one such study for one strategy (tune_one.py).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from transferlab import faults
from transferlab.compare.grid import SCRATCH, Cell, GridSpec, run_cell, run_dir_for, run_parallel, safe_name, \
    scratch_config, scratch_name
from transferlab.compare.tune_space import SpaceContext, Tunable, apply_params, scratch_space, strategy_space
from transferlab.errors import ConfigError
from transferlab.runs import RunCaches, RunConfig, finetune
from transferlab.safe_io import atomic_write_json
from transferlab.training.trainer import Callback

logger = logging.getLogger(__name__)

TUNING = "tuning"  # DIR/tuning/: the studies and the trials' runs
TUNED = "tuned"  # DIR/tuned/runs/<entry>/<seed>/: the chosen settings over the seeds
SUMMARY = "summary.json"


@dataclass
class TuneTask:
    """One entry's study (picklable: it travels to worker processes)."""

    entry: str  # the grid's strategy spec, or SCRATCH
    key: str  # its folder-safe name: DIR/tuning/<key>.db and DIR/tuning/<key>/
    space: dict  # study name -> Tunable
    base: RunConfig  # what a trial changes (its strategy, lr, weight decay, BatchNorm mode)
    trials: int
    seed: int
    root: Path  # DIR/tuning (finetune --tune: OUT/tuning)

    @property
    def db(self) -> Path:
        return self.root / f"{self.key}.db"

    def trial_dir(self, number: int) -> Path:
        return self.root / self.key / f"trial{number}"


# ---- Optuna -------------------------------------------------------------------------------------------------
def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("--tune needs optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: dict[str, Tunable]) -> dict:
    optuna = _optuna()
    out = {}
    for name, t in space.items():
        if t.choices is not None:
            out[name] = optuna.distributions.CategoricalDistribution(list(t.choices))
        elif t.is_int:
            out[name] = optuna.distributions.IntDistribution(int(t.low), int(t.high), log=t.log)
        else:
            out[name] = optuna.distributions.FloatDistribution(float(t.low), float(t.high), log=t.log)
    return out


def startup_trials(trials: int) -> int:
    """TPE's random start: half the budget, at most Optuna's default 10."""
    return max(1, min(10, trials // 2))


def pruner_startup(trials: int) -> int:
    """Finished trials before the pruner may stop one: a third of the budget, at most Optuna's default 5."""
    return max(1, min(5, trials // 3))


def open_study(task: TuneTask):
    optuna = _optuna()
    task.root.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{task.db.resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 120}})  # --jobs share it
    return optuna.create_study(storage=storage, study_name=task.key, direction="maximize", load_if_exists=True,
                               sampler=_sampler(task, 0),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=pruner_startup(task.trials),
                                                                  n_warmup_steps=0))


def _sampler(task: TuneTask, index: int):
    optuna = _optuna()
    digest = hashlib.sha256(f"{task.seed}:{task.key}:{index}".encode()).hexdigest()
    return optuna.samplers.TPESampler(seed=int(digest[:8], 16), n_startup_trials=startup_trials(task.trials))


def counted(study) -> list:
    """The trials that spent the budget: finished, pruned, or failed with an error of their own (a setting that
    does not train); not those a kill interrupted."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def mark_interrupted(study) -> int:
    """Trials left RUNNING (the process was killed): FAIL, so that their place in the budget is asked again.
    Called by the driver only, before any trial of this invocation starts."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        logger.info("tuning %s: trial %d was interrupted; it does not count, its place is asked again",
                    study.study_name, t.number)
    return len(stale)


class ReportToTrial(Callback):
    """Each epoch's validation accuracy to the trial; stops the run (after its checkpoint and history are written)
    when the pruner says so."""

    def __init__(self, trial):
        self.trial = trial

    def on_epoch_end(self, trainer, record):
        import optuna

        self.trial.report(record["val_accuracy"], record["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} (validation accuracy "
                                     f"{record['val_accuracy']:.4f} below the median of the finished trials)")


def trial_config(task: TuneTask, params: dict) -> RunConfig:
    cfg = copy.deepcopy(task.base)
    if task.entry != SCRATCH:
        cfg.strategy = apply_params(task.entry, params)
    cfg.train.lr = float(params.get("lr", cfg.train.lr))
    cfg.train.weight_decay = float(params.get("weight_decay", cfg.train.weight_decay))
    if "bn_stats" in params:
        cfg.train.bn_stats = params["bn_stats"]
    return cfg


@dataclass
class TrialOutcome:
    """What running one asked trial came to, for the process that tells the study (picklable: a Ray task returns
    it to the driver). `attrs`: user attributes the trial keeps (seconds, an error)."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None = None
    attrs: dict = field(default_factory=dict)


def ask_trial(task: TuneTask, study):
    """Ask the study for its next trial with the sampler seeded for the trial's place in the budget (the trials
    spent, plus those running: a proposal is a function of the seed and the trials finished before it)."""
    from optuna.trial import TrialState

    index = len(counted(study)) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    study.sampler = _sampler(task, index)
    trial = study.ask(distributions(task.space))
    trial.set_user_attr("run_dir", str(task.trial_dir(trial.number)))
    trial.set_user_attr("index", index)
    return trial


def execute_trial(task: TuneTask, trial, caches: RunCaches | None = None) -> TrialOutcome:
    """Run an asked trial (its run folder, each epoch's validation accuracy reported to it, the pruner's word
    taken); the study is told nothing here (tell_trial does it)."""
    import optuna

    run_dir = task.trial_dir(trial.number)
    start = time.perf_counter()
    try:
        cfg = trial_config(task, trial.params)
        trial.set_user_attr("strategy", cfg.strategy)
        torch.manual_seed(cfg.train.seed)
        logger.info("tuning %s: trial %d (%d/%d) %s", task.entry, trial.number,
                    trial.user_attrs.get("index", trial.number) + 1, task.trials, _params_text(trial.params))
        with faults.scope(f"trial:{task.key}:{trial.number}"):
            metrics = finetune(cfg, run_dir, overwrite=True, callbacks=[ReportToTrial(trial)], caches=caches)
    except Exception as exc:  # optuna.TrialPruned, or a setting that does not train
        seconds = time.perf_counter() - start
        if isinstance(exc, optuna.TrialPruned):
            atomic_write_json(run_dir / "pruned.json", {"trial": trial.number, "reason": str(exc)})
            logger.info("tuning %s: trial %d %s", task.entry, trial.number, exc)
            return TrialOutcome(trial.number, "PRUNED", attrs={"seconds": seconds})
        error = f"{type(exc).__name__}: {exc}".strip()
        logger.error("tuning %s: trial %d failed: %s", task.entry, trial.number, error)
        logger.debug("%s", traceback.format_exc())
        with contextlib.suppress(OSError):
            atomic_write_json(run_dir / "error.json", {"trial": trial.number, "error": error})
        return TrialOutcome(trial.number, "FAIL", attrs={"seconds": seconds, "error": error})
    return TrialOutcome(trial.number, "COMPLETE", metrics["val"]["accuracy"],
                        attrs={"seconds": time.perf_counter() - start})


def tell_trial(study, trial, outcome: TrialOutcome) -> str:
    """The outcome's attributes to the trial, then its state (and value) to the study; returns the state's name.
    `trial`: the asked `optuna.Trial`."""
    from optuna.trial import TrialState

    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    if outcome.state == "COMPLETE":
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, state=TrialState[outcome.state])
    return outcome.state


def run_trial(task: TuneTask, caches: RunCaches | None = None, study=None) -> str:
    """Ask one trial, run it, tell its outcome; returns its state's name."""
    study = study or open_study(task)
    trial = ask_trial(task, study)
    return tell_trial(study, trial, execute_trial(task, trial, caches))


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def tune_task(task: TuneTask, caches: RunCaches | None = None) -> None:
    """Run the entry's remaining trials here, one after another."""
    study = open_study(task)
    mark_interrupted(study)
    while len(counted(study)) < task.trials:
        run_trial(task, caches, study)


def best_trial(study):
    """The finished trial with the highest validation accuracy (ties: the earliest), or None."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def study_summary(task: TuneTask) -> dict:
    study = open_study(task)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "seconds": t.user_attrs.get("seconds"), "strategy": t.user_attrs.get("strategy"),
                     "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error"),
                     "interrupted": t.state.name == "FAIL" and "error" not in t.user_attrs,
                     "epochs_reported": len(t.intermediate_values)})
    best = best_trial(study)
    states = [r["state"] for r in rows if not r["interrupted"]]
    chosen = None
    if best is not None:
        cfg = trial_config(task, best.params)
        chosen = {"trial": best.number, "val_accuracy": best.value, "params": best.params,
                  "strategy": cfg.strategy, "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
                  "bn_stats": cfg.train.bn_stats}
    return {"entry": task.entry, "study": task.key, "db": str(task.db), "budget": task.trials,
            "space": {k: v.text() for k, v in task.space.items()},
            "trials": rows, "counted": len(counted(study)), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "interrupted": sum(r["interrupted"] for r in rows),
            "seconds": sum(r["seconds"] or 0.0 for r in rows), "best": chosen}


# ---- the grid's tuning ----------------------------------------------------------------------------------------
def space_context(base: RunConfig) -> SpaceContext:
    """The model's depth groups (built once, random head) and the run's epochs."""
    from transferlab.models import create_model

    with torch.random.fork_rng(devices=[]):
        model = create_model(base.model, 2, weights=base.weights, head=base.head)
    return SpaceContext(depth_groups=len(model.depth_groups), epochs=base.train.epochs)


def grid_tasks(spec: GridSpec, out: Path) -> list[TuneTask]:
    """One study per grid entry, the baseline last; every one with the same budget."""
    tune = spec.tune
    seed = spec.seeds[0]
    ctx = space_context(spec.base)
    tasks = []
    for entry in spec.strategies:
        base = copy.deepcopy(spec.base)
        base.strategy, base.train.seed = entry, seed
        tasks.append(TuneTask(entry, safe_name(entry), strategy_space(entry, ctx, spec.base.train.lr, tune.overrides),
                              base, tune.trials, seed, out / TUNING))
    if spec.scratch:
        base = scratch_config(spec, seed, out, spec.scratch_candidates()[0])
        base.train.lr = spec.base.train.lr
        tasks.append(TuneTask(SCRATCH, SCRATCH, scratch_space(spec.base.train.lr, tune.overrides), base,
                              tune.trials, seed, out / TUNING))
    return tasks


def tune_grid(spec: GridSpec, out: Path, resume: bool, jobs: int = 1, caches: RunCaches | None = None,
              runner=None) -> dict:
    """Tune every entry (the remaining trials), run the chosen settings over the seeds in DIR/tuned/, and write
    DIR/tuning/summary.json. Returns the summary. `runner`: runs the trials and the tuned cells elsewhere instead
    (`runner.trials(tasks)`, `runner.cells(cells)`: ray_tune.RayTuning, Ray tasks)."""
    tasks = grid_tasks(spec, out)
    if runner is not None:
        runner.trials(tasks)
    elif jobs > 1:
        _tune_parallel(spec, tasks, out, jobs)
    else:
        for task in tasks:
            tune_task(task, caches)
    summaries = {task.entry: study_summary(task) for task in tasks}
    cells = tuned_cells(spec, out, summaries)
    if runner is not None:
        if cells:
            runner.cells(cells)
    elif jobs > 1 and cells:
        run_parallel(spec, cells, out, resume, min(jobs, len(cells)))
    else:
        for cell in cells:
            run_cell(spec, cell, out, resume, caches=caches)
    summary = {"trials": spec.tune.trials, "space": spec.tune.space, "seed": spec.seeds[0],
               "sampler": f"TPE (seeded per trial; random for the first {startup_trials(spec.tune.trials)})",
               "pruner": f"median of the finished trials' validation accuracy per epoch (after "
                         f"{pruner_startup(spec.tune.trials)} finished)",
               "objective": "validation accuracy of the run's selected epoch", "entries": summaries}
    atomic_write_json(out / TUNING / SUMMARY, summary)
    return summary


def tuned_recipe(summary: dict, base_lr: float) -> dict | None:
    """The baseline's chosen setting as a scratch recipe (its folder name); None when no trial finished."""
    best = summary["entries"].get(SCRATCH, {}).get("best")
    if not best:
        return None
    return {"bn_stats": best["bn_stats"], "lr_scale": float(f"{best['lr'] / base_lr:.6g}")}


def tuned_spec(spec: GridSpec, summary: dict) -> GridSpec:
    """The tuned runs as a grid of their own (DIR/tuned): the same entries, the baseline's one recipe its chosen
    one; what `collect` reads back."""
    recipe = tuned_recipe(summary, spec.base.train.lr)
    return GridSpec(base=spec.base, strategies=list(spec.strategies), seeds=list(spec.seeds),
                    scratch=spec.scratch and recipe is not None, scratch_epochs=spec.scratch_epochs,
                    scratch_search=[recipe] if recipe else [], scratch_init=spec.scratch_init)


def tuned_cells(spec: GridSpec, out: Path, summaries: dict) -> list[Cell]:
    folder = out / TUNED
    cells = []
    for entry in spec.strategies:
        best = summaries[entry]["best"]
        if not best:
            logger.error("tuning %s: no trial finished; it has no tuned runs", entry)
            continue
        for seed in spec.seeds:
            cfg = copy.deepcopy(spec.base)
            cfg.strategy, cfg.train.seed = best["strategy"], seed
            cfg.train.lr, cfg.train.weight_decay = best["lr"], best["weight_decay"]
            cells.append(Cell(entry, seed, run_dir_for(folder, entry, seed), cfg))
    recipe = tuned_recipe({"entries": summaries}, spec.base.train.lr) if spec.scratch else None
    if recipe:
        best = summaries[SCRATCH]["best"]
        name = scratch_name(recipe)
        for seed in spec.seeds:
            cfg = scratch_config(spec, seed, out, spec.scratch_candidates()[0])
            cfg.train.lr, cfg.train.weight_decay = best["lr"], best["weight_decay"]
            cfg.train.bn_stats = best["bn_stats"]
            cells.append(Cell(name, seed, run_dir_for(folder, name, seed), cfg))
    return cells


def _tune_parallel(spec: GridSpec, tasks: list[TuneTask], out: Path, jobs: int) -> None:
    """The trials in `jobs` worker processes sharing each entry's SQLite study: every worker asks, runs and tells
    one trial. The proposals then depend on which trials had finished when each was asked (not reproducible
    trial for trial, unlike a sequential grid); the budget is the same."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from transferlab.compare.grid import FEATURE_CACHE, _init_worker, _stop_workers, worker_threads

    todo = []
    for task in tasks:
        study = open_study(task)
        mark_interrupted(study)
        todo += [task] * max(0, task.trials - len(counted(study)))
    if not todo:
        return
    jobs = min(jobs, len(todo))
    threads = worker_threads(jobs, torch.get_num_threads())
    level = logging.getLogger("transferlab").getEffectiveLevel()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads, spec, out / FEATURE_CACHE, level))
    interrupted = False
    try:
        for future in as_completed([pool.submit(_worker_trial, task) for task in todo]):
            try:
                future.result()
            except Exception as exc:  # a worker died: its trial stays RUNNING until the next --resume
                logger.error("a tuning worker failed: %s: %s", type(exc).__name__, exc)
    except KeyboardInterrupt:
        interrupted = True
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)


def _worker_trial(task: TuneTask) -> str:
    from transferlab.compare import grid

    return run_trial(task, grid._worker_caches)


# ---- the report's side -----------------------------------------------------------------------------------------
def read_summary(out: str | Path) -> dict | None:
    path = Path(out) / TUNING / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None
