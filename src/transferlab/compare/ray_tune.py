"""`compare --tune TRIALS --executor ray`: the tuning trials, and the chosen settings' runs, as Ray tasks.

The driver (the process running `compare`) keeps every entry's SQLite study (DIR/tuning/<entry>.db) and is the
only one to ask and tell: it asks a trial with the seeded sampler (tune.ask_trial), sends it to a Ray task of
`cpus_per_cell` CPUs and `gpus_per_cell` GPUs, and tells the study the state and value the task returns
(tune.tell_trial). The task runs the trial as a local grid does (tune.execute_trial: the trial's run folder, each
epoch's validation accuracy reported to the study, the median pruner's word taken), so on a cluster the study, like
the run folders, must be on the file system the nodes share (--out).

What runs at once: every entry's study is independent, so entries run side by side. Within one study, a trial is
asked while others run only when neither the sampler nor the pruner can tell (its place in the budget is below the
pruner's start-up count, which is below TPE's random start); every later trial is asked once the study's earlier
ones have finished. The proposals, the pruning and the chosen setting are then the same, trial for trial, as a
sequential grid's with the same seed (a free-running parallel study would ask TPE before the trials it would learn
from had finished, and choose differently from run to run).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transferlab.compare.grid import Cell, GridSpec
from transferlab.compare.ray_executor import WAIT_S, _absolute, _connect, cluster_config, import_ray, \
    prepare_worker, run_on_ray
from transferlab.compare.tune import TrialOutcome, TuneTask, ask_trial, counted, execute_trial, mark_interrupted, \
    open_study, pruner_startup, tell_trial

logger = logging.getLogger(__name__)


def parallel_trials(trials: int) -> int:
    """How many of a study's first trials may run at once without changing a proposal or a pruning decision: those
    before the pruner's start-up count (itself below TPE's random start; see the module's text)."""
    return pruner_startup(trials)


@contextlib.contextmanager
def ray_session(address: str | None, cpus_per_cell: int):
    """Ray connected for the whole of a tuned grid (its cells, trials and tuned runs start no instance of their
    own); shut down at the end if this started it."""
    ray = import_ray()
    started = _connect(ray, address, cpus_per_cell)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@dataclass
class RayTuning:
    """tune.tune_grid's runner on Ray: `trials(tasks)` runs the studies' remaining trials, `cells(cells)` the
    chosen settings over the seeds (ray_executor.run_on_ray)."""

    spec: GridSpec
    out: Path
    resume: bool
    address: str | None = None
    cpus_per_cell: int = 1
    gpus_per_cell: float = 0
    progress: object = None

    def trials(self, tasks: list[TuneTask]) -> None:
        run_trials_on_ray(self.spec, tasks, self.out, self.address, self.cpus_per_cell, self.gpus_per_cell)

    def cells(self, cells: list[Cell]) -> None:
        run_on_ray(self.spec, cells, self.out, self.resume, address=self.address, cpus_per_cell=self.cpus_per_cell,
                   gpus_per_cell=self.gpus_per_cell, progress=self.progress)


def run_trials_on_ray(spec: GridSpec, tasks: list[TuneTask], out: Path, address: str | None = None,
                      cpus_per_cell: int = 1, gpus_per_cell: float = 0) -> None:
    """Every study's remaining trials as Ray tasks, asked and told here. A task that dies is a failed trial (it
    spends its place in the budget, as a setting that does not train does); Ctrl-C cancels the tasks, and their
    trials, left running in the study, are asked again on --resume."""
    ray = import_ray()
    # absolute paths for the tasks: a worker's working folder is not this one on another node (ray_executor)
    spec = copy.copy(spec)
    spec.base = cluster_config(spec.base)
    out = Path(_absolute(out))
    tasks = [dataclasses.replace(t, base=cluster_config(t.base), root=Path(_absolute(t.root))) for t in tasks]
    studies = {}
    for task in tasks:
        studies[task.key] = open_study(task)
        mark_interrupted(studies[task.key])
    if all(len(counted(studies[t.key])) >= t.trials for t in tasks):
        return
    level = logging.getLogger("transferlab").getEffectiveLevel()
    with ray_session(address, cpus_per_cell):
        remote = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(_run_trial_task)
        spec_ref = ray.put(spec)
        pending: dict = {}  # Ray reference -> (task, asked trial)
        running: Counter = Counter()
        try:
            while True:
                for task in tasks:
                    study = studies[task.key]
                    while _may_ask(task, study, running[task.key]):
                        trial = ask_trial(task, study)
                        # the trial's id in the storage: the task reopens the same trial from the study's file
                        ref = remote.remote(spec_ref, task, trial._trial_id, out, cpus_per_cell, gpus_per_cell, level)
                        pending[ref] = (task, trial)
                        running[task.key] += 1
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    task, trial = pending.pop(ref)
                    running[task.key] -= 1
                    tell_trial(studies[task.key], trial, _outcome(ray, ref, task, trial.number))
        except KeyboardInterrupt:
            logger.warning("interrupted: cancelling the Ray tasks (their trials are asked again with --resume)")
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def _may_ask(task: TuneTask, study, running: int) -> bool:
    """Whether the study's next trial may be asked now (see the module's text)."""
    place = len(counted(study)) + running
    if place >= task.trials:
        return False
    return running == 0 or place < parallel_trials(task.trials)


def _outcome(ray, ref, task: TuneTask, number: int) -> TrialOutcome:
    """The task's outcome, or a failed trial when the task could not return one (its worker died, ...)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # raised in the task outside the trial's own run
        cause = exc.cause if isinstance(exc.cause, Exception) else exc
        error = f"{type(cause).__name__}: {cause}".strip()
    except ray.exceptions.RayError as exc:  # WorkerCrashedError (killed: out of memory?), a node that died, ...
        error = f"{type(exc).__name__}: {exc}".strip()
    logger.error("tuning %s: trial %d failed on Ray: %s", task.entry, number, error)
    return TrialOutcome(number, "FAIL", attrs={"error": error})


# ---- inside a Ray worker process -----------------------------------------------------------------------------
def _run_trial_task(spec: GridSpec, task: TuneTask, trial_id: int, out: Path, threads: int, gpus: float,
                    log_level: int) -> TrialOutcome:
    """One asked trial in a Ray worker: reopened from the study's file (so that its epochs are reported there and
    the pruner sees the finished trials), run, its outcome returned for the driver to tell."""
    import optuna

    caches = prepare_worker(spec, out, threads, gpus, log_level)
    trial = optuna.trial.Trial(open_study(task), trial_id)
    return execute_trial(task, trial, caches)
