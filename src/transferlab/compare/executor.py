"""Where a comparison grid's cells run, and running them: one after another in this process, in `jobs` worker
processes on this machine (grid.run_parallel), or as Ray tasks (ray_executor.run_on_ray). Each cell runs the same
grid.run_cell (re-seeded, its own config only), so the results are the same wherever it ran."""
from __future__ import annotations

import logging
from pathlib import Path

from transferlab.compare.grid import CellResult, GridProgress, GridSpec, _absolute_base, check_grid_dir, \
    grid_caches, plan, run_cell, run_parallel
from transferlab.compare.ray_executor import check_cluster_paths, check_ray_options, run_on_ray
from transferlab.errors import ConfigError
from transferlab.outputs import check_output_path
from transferlab.progress import Progress
from transferlab.runs import run_inputs, run_state
from transferlab.safe_io import atomic_write_json

logger = logging.getLogger(__name__)


def run_grid(spec: GridSpec, out: str | Path, resume: bool = False, given: set[str] | None = None,
             jobs: int = 1, executor: str = "local", address: str | None = None, cpus_per_cell: int | None = None,
             gpus_per_cell: float | None = None, progress: Progress | None = None, tracker=None) -> list[CellResult]:
    """Run every cell (skipping finished ones when resuming); a failing cell is recorded and the rest go on.
    `jobs` > 1 runs the cells in that many worker processes (see run_parallel); `executor="ray"` runs them as Ray
    tasks of `cpus_per_cell` CPUs (1) and `gpus_per_cell` GPUs (0) each, on the cluster at `address` or a local
    instance (see ray_executor). The results are the same. `progress`: shared with work that follows the grid
    (compare's report), so that the time left counts it; by default the grid's runs only. `tracker`: started here
    once the folder is checked (`tracker.start(out)`: a parent run), then carried by every cell to wherever it
    runs, where `tracker.for_cell(...)` tracks it (tracking.live.GridTracking)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (the number of worker processes running the grid's cells), "
                          f"got {jobs}")
    if executor == "ray" and address:  # before check_executor connects: a path that cannot work on a cluster
        check_cluster_paths(spec.base, address)
    check_executor(executor, jobs, address, cpus_per_cell, gpus_per_cell, spec.base.train.device)
    check_process_local_model(spec.base.model, jobs, executor)
    out = check_output_path(out, "--out", run_inputs(spec.base))  # before Path(""), the current folder
    spec = check_grid_dir(out, spec, resume, given)
    spec.base = _absolute_base(spec.base)
    cells = plan(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "grid.json", spec.to_dict())
    if tracker is not None:
        tracker.start(out)  # before any cell: each cell's run is a child of the grid's
        for cell in cells:
            cell.tracker = tracker
    tune_jobs = jobs  # the trials' processes: not limited by the grid's cells still to run
    to_run = sum(run_state(cell.run_dir) != "finished" for cell in cells)
    if jobs > 1 and jobs > to_run:
        logger.info("--jobs %d: %d run(s) to do, so %d process(es)", jobs, to_run, max(to_run, 1))
        jobs = max(to_run, 1)
    own = progress is None
    progress = progress or Progress(logging.getLogger("transferlab.compare.grid"))
    try:
        if executor == "ray" and spec.tune is None:
            return run_on_ray(spec, cells, out, resume, address=address, cpus_per_cell=cpus_per_cell or 1,
                              gpus_per_cell=gpus_per_cell or 0, progress=progress)
        if executor == "ray":  # the cells, then the trials and the chosen settings' runs, on one Ray connection
            from transferlab.compare.ray_tune import RayTuning, ray_session
            from transferlab.compare.tune import tune_grid

            ray_options = {"address": address, "cpus_per_cell": cpus_per_cell or 1,
                           "gpus_per_cell": gpus_per_cell or 0}
            with ray_session(address, cpus_per_cell or 1):
                results = run_on_ray(spec, cells, out, resume, progress=progress, **ray_options)
                tune_grid(spec, out, resume, runner=RayTuning(spec, out, resume, progress=progress, **ray_options))
            return results
        if jobs > 1:
            results = run_parallel(spec, cells, out, resume, jobs, progress)
            caches = None
        else:
            grid_progress = GridProgress(len(cells), progress=progress)
            caches = grid_caches(spec)
            results = []
            for i, cell in enumerate(cells):
                grid_progress.start(i, cell)
                results.append(run_cell(spec, cell, out, resume, grid_progress, caches))
                grid_progress.done(results[-1])
        if spec.tune is not None:  # then every entry's trials and its chosen setting over the seeds
            from transferlab.compare.tune import tune_grid

            tune_grid(spec, out, resume, jobs=tune_jobs, caches=caches)
        return results
    finally:
        if own:
            progress.close()


def check_process_local_model(model: str, jobs: int, executor: str) -> None:
    """A model given to `register_module` exists in this process only: the grid's worker processes are spawned
    (a fresh interpreter) and Ray's are other processes, so neither could build it."""
    from transferlab.models.own_models import is_registered_module

    if not is_registered_module(model):
        return
    if executor == "ray":
        raise ConfigError(f"--executor ray: model {model!r} was registered with register_module in this process, "
                          "and Ray's worker processes do not have it; run the grid here (executor local, jobs 1)")
    if jobs > 1:
        raise ConfigError(f"--jobs {jobs}: model {model!r} was registered with register_module in this process, "
                          "and the grid's worker processes are spawned without it; run the grid with jobs 1")


EXECUTORS = ("local", "ray")  # where the cells run: this machine (--jobs processes), or Ray tasks


def check_executor(executor: str, jobs: int, address: str | None, cpus_per_cell: int | None,
                   gpus_per_cell: float | None, device: str = "auto") -> None:
    """The executor options fit together; checked before the grid folder is written. None: not given."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    ray_only = [name for name, value in (("--address", address), ("--cpus-per-cell", cpus_per_cell),
                                         ("--gpus-per-cell", gpus_per_cell)) if value is not None]
    if executor != "ray":
        if ray_only:
            raise ConfigError(f"{', '.join(ray_only)} only apply to --executor ray (the Ray cluster and each cell's "
                              "resources there); add --executor ray or drop them")
        return
    if jobs > 1:
        raise ConfigError(f"--jobs {jobs} is for --executor local (worker processes on this machine); with "
                          "--executor ray, Ray spreads the cells: drop --jobs and size them with --cpus-per-cell")
    check_ray_options(address, cpus_per_cell, gpus_per_cell, device)
