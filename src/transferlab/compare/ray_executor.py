"""A comparison grid's cells as Ray tasks (`transferlab compare --executor ray`).

Each cell that is not finished yet becomes one task declaring `cpus_per_cell` CPUs and `gpus_per_cell` GPUs; the
task runs the same `grid.run_cell` as a local grid (re-seeded, its own config only), so the report equals a local
run's. Ray is optional (`pip install "transferlab[cluster]"`) and imported only here, when it is asked for.

Where the code comes from: a task names `transferlab.compare.ray_executor._run_cell_task`, which each Ray worker
imports. A local instance's workers run this same Python with this process's environment (the venv, where
transferlab is installed, editable in a checkout; PYTHONPATH too), so they find it. On a cluster every node needs
transferlab installed (the same version), the data at the same paths, and --out on a file system all nodes share
at the same path: the tasks write their run folders there themselves.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import socket
from pathlib import Path

import torch

from transferlab.compare import grid
from transferlab.compare.grid import FEATURE_CACHE, Cell, CellResult, GridProgress, GridSpec
from transferlab.errors import ConfigError
from transferlab.runs import RunCaches, RunConfig, run_inputs, run_state, with_absolute_paths

logger = logging.getLogger(__name__)

EXTRA = 'pip install "transferlab[cluster]"'
CONNECT_TIMEOUT_S = 5.0  # a TCP connect to --address; `ray.init` on a dead address can block for minutes
WAIT_S = 1.0  # ray.wait's timeout: short, so that Ctrl-C is seen at once


def import_ray():
    """The `ray` module, or one line naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {EXTRA}") from exc
    return ray


def check_ray_options(address: str | None, cpus_per_cell: int | None, gpus_per_cell: float | None,
                      device: str = "auto") -> None:
    """Everything about `--executor ray` that can be checked before the grid folder is written: the values, that
    Ray imports, that something listens at `address`. `device` is the cells' --device."""
    if cpus_per_cell is not None and cpus_per_cell < 1:
        raise ConfigError(f"--cpus-per-cell must be >= 1 (the CPUs Ray reserves for each cell), got {cpus_per_cell}")
    if gpus_per_cell is not None and gpus_per_cell < 0:
        raise ConfigError(f"--gpus-per-cell must be >= 0 (the GPUs Ray reserves for each cell; 0.5 shares one "
                          f"between two cells), got {gpus_per_cell}")
    if device.startswith("cuda") and not gpus_per_cell:
        raise ConfigError(f"--device {device} with --executor ray needs --gpus-per-cell > 0: a Ray task sees only "
                          "the GPUs it reserved")
    import_ray()
    if address:
        check_address(address)


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT`, `[IPv6]:PORT` or `ray://HOST:PORT` (the Ray client's)."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: give HOST:PORT of the Ray head node (e.g. 10.0.0.1:6379, as "
                          "printed by `ray start --head`), or auto")
    return host.strip("[]"), int(port)


def check_address(address: str) -> None:
    """A plain TCP connect to `address`, so that nobody listening there fails in seconds with one line.
    `auto` (Ray finds a cluster started on this machine, or RAY_ADDRESS) is left to ray.init."""
    if address == "auto":
        return
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__  # a timeout has no strerror
        raise ConfigError(f"--address {address}: nothing answers there ({reason}); start the head node with "
                          f"`ray start --head --port {port}`, or check the host and port") from exc


# ---- paths on a cluster ---------------------------------------------------------------------------------------
# A cell on another node resolves a relative path against its worker's working folder (Ray's session folder there),
# not against the folder `transferlab compare` was started in; so every path a cell reads or writes goes to the tasks
# as an absolute path. With --address, an input path that is relative AND not found here is refused (one line, before
# connecting): it cannot be made absolute with any confidence, and what it would mean on a node is an accident. An
# absolute input path that this machine does not see is only warned about, not refused: a node may see a path the
# driver does not (a mount on the workers only), and refusing it would forbid a working setup. It stays a warning and
# not silence because this machine reads the runs' data and models too: the report's sections (CKA, forgetting,
# BatchNorm shift) load every run here after the grid, and would fail there. (The command line already refuses a
# --data or --source-data that does not exist here, for every executor.)
OUTPUT_OPTIONS = ("--out", "--cache-dir")


def _absolute(value: str) -> str:
    """`value` as an absolute path, without resolving links (a shared mount keeps the name every node knows)."""
    return str(Path(str(value)).expanduser().absolute())


def check_cluster_paths(base: RunConfig, address: str) -> None:
    """The cells' input paths, for a grid sent to the Ray cluster at `address`: a relative path not found here is
    refused in one line; an absolute one not found here is warned about (see above)."""
    for option, value in run_inputs(base).items():
        if not value:
            continue
        path = Path(str(value)).expanduser()
        if path.exists():
            continue
        if not path.is_absolute():
            raise ConfigError(f"{option} {value}: no such file or folder here, and on the Ray cluster at {address} a "
                              "relative path would be read from each node's own working folder; give the absolute "
                              "path at which every node sees it")
        logger.warning("%s %s is not found on this machine: the cells read it on the cluster's nodes, where it must "
                       "exist; the report, written here, reads it too", option, value)


def cluster_config(config: RunConfig) -> RunConfig:
    """A copy of a cell's config with every path it reads or writes absolute (--data, --weights, --source-data, a
    model folder, --cache-dir), as the tasks get it."""
    config = with_absolute_paths(copy.deepcopy(config))
    for option, value in run_inputs(config).items():  # relative and not found here (a local instance only; a
        if not value or Path(str(value)).expanduser().is_absolute():  # cluster refused it): as this process reads it
            continue
        if option == "--data":
            config.data = _absolute(value)
        elif option == "--weights":
            config.weights = _absolute(value)
        elif option == "--source-data":
            config.strategy_options = {**config.strategy_options, "source_data": _absolute(value)}
    if config.train.cache_dir:
        config.train.cache_dir = _absolute(config.train.cache_dir)
    return config


def cluster_paths(spec: GridSpec, out: Path) -> dict[str, str]:
    """{option: absolute path} of what the tasks read and write: the inputs, --out and --cache-dir."""
    base = cluster_config(spec.base)
    paths = {option: str(value) for option, value in run_inputs(base).items() if value}
    paths["--out"] = _absolute(out)
    if base.train.cache_dir:
        paths["--cache-dir"] = base.train.cache_dir
    return paths


def run_on_ray(spec: GridSpec, cells: list[Cell], out: Path, resume: bool, address: str | None = None,
               cpus_per_cell: int = 1, gpus_per_cell: float = 0, progress=None) -> list[CellResult]:
    """The cells as Ray tasks on the cluster at `address` (else the instance this process is connected to, else a
    local one sized to this machine); results in plan order. Finished cells are kept without a task; a task that
    dies becomes a failed cell (error.json) and the others go on; Ctrl-C cancels the tasks."""
    ray = import_ray()
    check_ray_options(address, cpus_per_cell, gpus_per_cell, spec.base.train.device)
    progress = GridProgress(len(cells), progress=progress)  # `progress`: a transferlab.progress.Progress to share
    results: list[CellResult | None] = [None] * len(cells)
    for i, cell in enumerate(cells):
        if run_state(cell.run_dir) == "finished":  # as run_cell does, without a task
            results[i] = grid.run_cell(spec, cell, out, resume)
            progress.finished(i, results[i])
    todo = [i for i, result in enumerate(results) if result is None]
    if not todo:
        return results
    # Absolute paths for the tasks: a worker's working folder is not this one on another node (see above).
    spec = copy.copy(spec)
    spec.base = cluster_config(spec.base)
    out_abs = Path(_absolute(out))
    if address:
        paths = cluster_paths(spec, out)
        logger.warning("Ray cluster at %s: the cells read and write %s; each must exist at that same path on every "
                       "node (--out%s on a file system all nodes share)", address,
                       ", ".join(f"{option} {path}" for option, path in paths.items()),
                       " and --cache-dir" if "--cache-dir" in paths else "")
    started = _connect(ray, address, cpus_per_cell)
    try:
        progress.jobs = _cells_at_once(ray, cpus_per_cell, gpus_per_cell, local=started and not address)
        level = logging.getLogger("transferlab").getEffectiveLevel()
        # Declared in ray.remote (not .options): with num_gpus > 0 there, Ray gives each GPU cell a fresh worker
        # process (max_calls=1), which frees its GPU memory. max_retries=0: a cell whose worker died is failed, as
        # with --jobs; --resume continues it.
        task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(_run_cell_task)
        spec_ref = ray.put(spec)  # once, not with every task
        pending = {task.remote(spec_ref, _task_cell(cells[i]), out_abs, resume, i, len(cells), cpus_per_cell,
                               gpus_per_cell, level): i
                   for i in todo}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    i = pending.pop(ref)
                    results[i] = _task_result(ray, ref, cells[i])
                    progress.finished(i, results[i])
        except KeyboardInterrupt:
            logger.warning("interrupted: cancelling the Ray tasks (unfinished runs continue with --resume)")
            for ref in pending:
                ray.cancel(ref, force=True)  # force: stop the running cells now, not after their epochs
            raise
    finally:
        if started:  # only what this call started or connected; a caller's own ray.init stays
            ray.shutdown()
    return results


def _task_cell(cell: Cell) -> Cell:
    """The cell as its task gets it: its run folder and its config's paths absolute (a scratch cell's config is
    made in the task, from the spec's base, already absolute)."""
    return dataclasses.replace(cell, run_dir=Path(_absolute(cell.run_dir)),
                               config=cluster_config(cell.config) if cell.config is not None else None)


def _connect(ray, address: str | None, cpus_per_cell: int) -> bool:
    """Connect to Ray; True when this call did (and so must shut it down)."""
    if ray.is_initialized():
        logger.info("Ray: using the instance this process is already connected to")
        return False
    # Worker output (the cells' progress lines) comes to this terminal, as the --jobs workers' does.
    options = {"log_to_driver": True, "logging_level": logging.WARNING}
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # no token, versions
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"--address {address}: cannot connect to Ray ({first})") from exc
        return True
    cpus = torch.get_num_threads() or os.cpu_count() or 1
    if cpus_per_cell > cpus:
        raise ConfigError(f"--cpus-per-cell {cpus_per_cell} is more than the {cpus} CPU(s) of the local Ray instance "
                          "(torch's threads here: the cores, or OMP_NUM_THREADS); no cell could start")
    # Sized to what torch uses here; no dashboard (a web server nobody asked for); this machine's loopback address
    # as the node's address (a local instance serves this process only). Ray 2.60 maps a loopback address to the
    # machine's routable one on Linux, and its gRPC servers may still listen on every interface.
    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **options)
    return True


def _cells_at_once(ray, cpus_per_cell: int, gpus_per_cell: float, local: bool) -> int:
    """How many cells the cluster's alive nodes hold at once (for the time-left estimate). None fitting on any node:
    an error for the local instance (the tasks would wait for ever), a warning on a cluster (an autoscaler may add
    a node)."""
    fits = 0
    for node in ray.nodes():
        if not node.get("Alive", False):
            continue
        have = node.get("Resources", {})
        n = int(have.get("CPU", 0) // cpus_per_cell)
        if gpus_per_cell:
            n = min(n, int(have.get("GPU", 0) // gpus_per_cell))
        fits += n
    need = f"{cpus_per_cell} CPU(s)" + (f" and {gpus_per_cell:g} GPU(s)" if gpus_per_cell else "")
    if not fits:
        if local:
            raise ConfigError(f"no cell fits on the local Ray instance: each needs {need}; lower --cpus-per-cell "
                              "or --gpus-per-cell")
        logger.warning("Ray: no node has %s free for a cell now; the tasks wait until one joins", need)
        return 1
    logger.info("Ray: %d cell(s) at a time, %s each", fits, need)
    return fits


def _task_result(ray, ref, cell: Cell) -> CellResult:
    """The task's CellResult, or a failed cell when the task could not return one."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # raised in the task around run_cell: report the error itself
        return grid._failed(cell, exc.cause if isinstance(exc.cause, Exception) else exc)
    except ray.exceptions.RayError as exc:  # WorkerCrashedError (killed: out of memory?), a node that died, ...
        return grid._failed(cell, exc)
    result.cell.run_dir = cell.run_dir  # the path as planned (absolute only for the task)
    return result


# ---- inside a Ray worker process -----------------------------------------------------------------------------
_worker_caches: dict[tuple, RunCaches] = {}  # this worker process's caches, one per grid (cache folder)
_worker_logging = False


def _run_cell_task(spec: GridSpec, cell: Cell, out: Path, resume: bool, index: int, total: int, threads: int,
                   gpus: float, log_level: int) -> CellResult:
    """One cell in a Ray worker. Workers are reused across tasks (and across grids sent to a long-lived cluster),
    so what `grid._init_worker` does once per process is done here per task, cheaply."""
    prepare_worker(spec, out, threads, gpus, log_level)
    return grid._worker_run_cell(spec, cell, out, resume, index, total)


def prepare_worker(spec: GridSpec, out: Path, threads: int, gpus: float, log_level: int) -> RunCaches:
    """What a task does first in a Ray worker (a cell's, or a tuning trial's: ray_tune): its torch threads, no GPU
    unless it reserved one, logging, and the grid's caches in this process (also set as `grid._worker_caches`)."""
    global _worker_logging
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    if not gpus and not torch.cuda.is_initialized():
        # Ray hides no GPU from a task that reserved none: without this, --device auto would put the cell on a
        # GPU that Ray gives to other tasks.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if not _worker_logging:
        logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("transferlab").setLevel(log_level)
        _worker_logging = True
    # Frozen-prefix entries in DIR/feature_cache (or --cache-dir), shared with the tasks in other processes.
    folder = out / FEATURE_CACHE
    key = (str(folder), spec.base.train.cache_dir, spec.base.train.cache_memory_mb)
    if key not in _worker_caches:
        _worker_caches[key] = grid.grid_caches(spec, folder=folder)
    grid._worker_caches = _worker_caches[key]  # what _worker_run_cell reads, as after _init_worker
    return _worker_caches[key]
