"""A comparison grid: strategies x seeds (plus a from-scratch baseline), each cell an ordinary run.

DIR/grid.json                     the grid that was asked (strategies, seeds, the shared run config)
DIR/runs/<strategy>/<seed>/       one `runs.finetune` run directory per cell
DIR/runs/<strategy>/<seed>/error.json   written when that cell failed (removed when it later finishes)
DIR/runs/scratch-<recipe>/<seed>/ the from-scratch baseline, one folder per candidate recipe (SCRATCH_SEARCH)
DIR/scratch_init/                 random initial weights (or a random-init model folder) for the baseline
DIR/feature_cache/                frozen-prefix outputs shared by the worker processes of `jobs > 1`
DIR/tuning/, DIR/tuned/           with --tune: the Optuna studies and trials, the chosen settings' runs (tune.py)

Every cell depends only on its own config and seed (torch is re-seeded before each), so a grid that was killed
and continued with `resume=True` ends with the same numbers as one that ran straight through, and a grid run in
`jobs` worker processes with the same numbers as one run cell after cell. `compare/executor.py` decides where the
cells run (here, in `run_parallel`'s processes, or on Ray) and runs them.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from transferlab.compare.tune_space import TuneSpec, check_overrides
from transferlab.errors import ConfigError
from transferlab.outputs import GRID_FOLDER, GRID_FORMAT, foreign_message, folder_state
from transferlab.progress import Progress
from transferlab.runs import RunCaches, RunConfig, finetune, run_state
from transferlab.safe_io import atomic_write_json, save_tensors
from transferlab.strategies import parse_strategy
from transferlab.training.trainer import Callback

logger = logging.getLogger(__name__)

SCRATCH = "scratch"  # the from-scratch baseline's name in the grid, the report and the run folder
# The baseline's recipe: every parameter at the base rate (a random backbone has nothing to protect, so the
# 0.1x backbone rate that `full` gives a pre-trained one does not apply), and the choices that matter for it
# selected on validation like a strategy's, not inherited from the grid's settings for a pre-trained model:
# BatchNorm statistics re-estimated or kept (a random model's running statistics are 0 and 1) and the
# learning rate (x1, x3 the grid's). Measured in docs/compare.md ("The from-scratch baseline").
SCRATCH_STRATEGY = "full:backbone_lr=1"
SCRATCH_SEARCH = [{"bn_stats": bn, "lr_scale": scale} for bn in ("frozen", "auto") for scale in (1.0, 3.0)]
DEFAULT_STRATEGIES = "linear_probe,freeze,discriminative,l2sp,lp_ft,full"
# The main job (`make demo`): the real pre-trained efficientnet_lite0 on digits in minutes on 2 CPU cores.
# Applied only when data is digits and the option was not given. At 32 px the deepest feature maps are 1x1,
# at 64 px 2x2: BatchNorm batch statistics rest on a handful of values per channel, and a model trained on them
# meets different (running) statistics at evaluation. Measured at 64 px with --bn-stats auto: full 0.517 val
# accuracy at 0.93 train accuracy, lp_ft collapsing after its probe; with the pre-trained statistics kept
# (--bn-stats frozen): full 0.953, lp_ft 0.913 (README, docs/compare.md).
# digits has no test split: 20% is held out as one (--test-fraction), so the report's numbers are not the ones
# the epochs were selected on.
DIGITS_DEFAULTS = {"image_size": 64, "max_train": 500, "max_val": 300, "epochs": 3, "batch_size": 32, "lr": 2e-3,
                   "bn_stats": "frozen", "test_fraction": 0.2}


@dataclass
class GridSpec:
    """What to compare. `base` carries the model, data, training and data options shared by every cell."""

    base: RunConfig
    strategies: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    scratch: bool = True
    scratch_epochs: int | None = None  # the baseline's epochs (None: the grid's)
    scratch_search: list[dict] = field(default_factory=lambda: [dict(r) for r in SCRATCH_SEARCH])
    # "random": the baseline gets random weights of the model's architecture; "given": the base model already
    # is a random init (a pretrain run's kept scratch entry), trained as it is
    scratch_init: str = "random"
    # --tune TRIALS: every entry (and the baseline) gets TRIALS Optuna trials on validation first, and its chosen
    # setting is run over the seeds beside the defaults (compare/tune.py); None: no tuning
    tune: TuneSpec | None = None

    def __post_init__(self):
        if self.scratch_epochs is not None and (isinstance(self.scratch_epochs, bool)
                                                or not isinstance(self.scratch_epochs, int) or self.scratch_epochs < 1):
            raise ConfigError(f"--scratch-epochs must be an integer >= 1, got {self.scratch_epochs!r}")
        if self.scratch_init not in ("random", "given"):
            raise ConfigError(f"scratch_init must be 'random' or 'given', got {self.scratch_init!r}")
        for recipe in self.scratch_search:
            if set(recipe) != {"bn_stats", "lr_scale"} or recipe["bn_stats"] not in ("auto", "frozen") \
                    or not isinstance(recipe["lr_scale"], (int, float)) or not recipe["lr_scale"] > 0:
                raise ConfigError(f"a scratch recipe is {{'bn_stats': auto|frozen, 'lr_scale': > 0}}, got {recipe!r}")
        self.strategies = [s.strip() for s in self.strategies]
        if not self.strategies and not self.scratch:
            raise ConfigError("nothing to compare: give --strategies (or keep --scratch)")
        if not self.seeds:
            raise ConfigError("--seeds must be >= 1")
        for spec in self.strategies:  # every spec is checked before anything runs
            parse_strategy(spec)
        canonical = [parse_strategy(s).spec() for s in self.strategies]
        dupes = sorted({s for s in canonical if canonical.count(s) > 1})
        if dupes:
            raise ConfigError(f"strategy listed twice: {', '.join(dupes)}")
        if self.tune is not None:
            check_overrides(self.tune.overrides, self.strategies, self.scratch)

    def to_dict(self) -> dict:
        return {"format": GRID_FORMAT, "base": self.base.to_dict(), "strategies": self.strategies,
                "seeds": self.seeds, "scratch": self.scratch, "scratch_epochs": self.scratch_epochs,
                "scratch_search": self.scratch_search, "scratch_init": self.scratch_init,
                "tune": self.tune.to_dict() if self.tune else None}

    @classmethod
    def from_dict(cls, d: dict) -> "GridSpec":
        # grids saved before the baseline's search ran one recipe: full (backbone at 0.1x), the grid's settings
        legacy = [{"bn_stats": d["base"]["train"].get("bn_stats", "auto"), "lr_scale": 1.0}]
        return cls(base=RunConfig.from_dict(d["base"]), strategies=d["strategies"], seeds=d["seeds"],
                   scratch=d["scratch"], scratch_epochs=d.get("scratch_epochs"),
                   scratch_search=d.get("scratch_search", legacy), scratch_init=d.get("scratch_init", "random"),
                   tune=TuneSpec.from_dict(d.get("tune")))

    def scratch_candidates(self) -> list[str]:
        """The baseline's candidate names, in search order: `scratch:bn_stats=frozen,lr_scale=1`."""
        return [scratch_name(r) for r in self.scratch_search] if self.scratch else []


def scratch_name(recipe: dict) -> str:
    return f"{SCRATCH}:bn_stats={recipe['bn_stats']},lr_scale={recipe['lr_scale']:g}"


def scratch_recipe(name: str) -> dict:
    """scratch_name's inverse."""
    fields_ = dict(part.split("=", 1) for part in name.split(":", 1)[1].split(","))
    return {"bn_stats": fields_["bn_stats"], "lr_scale": float(fields_["lr_scale"])}


def is_scratch(strategy: str) -> bool:
    return strategy == SCRATCH or strategy.startswith(SCRATCH + ":")


def grid_spec(model: str = "efficientnet_lite0", data: str = "digits", strategies: str | list[str] = DEFAULT_STRATEGIES,
              seeds: int | None = 1, scratch: bool = True, weights: str | None = None, source_data: str | None = None,
              head: str | None = None, scratch_epochs: int | None = None, tune: int | None = None,
              tune_space: str | None = None, target_data: str | None = None, **options) -> GridSpec:
    """The grid `transferlab compare` runs for these arguments: `options` are TrainConfig and DataOptions fields
    (epochs=3, image_size=64, ...); on digits, DIGITS_DEFAULTS fill the ones not given. `seeds` seeds per
    strategy, counting up from `seed`. The data split stays fixed (seeded by `seed`) across the grid's seeds,
    so strategies and seeds are compared on the same validation set. `tune`: trials per entry (--tune), with
    `tune_space` overrides (--tune-space); the baseline's 4-recipe search is then replaced by tuning (its default
    entry is one recipe: the grid's BatchNorm mode and learning rate). `target_data`: unlabelled target-domain data
    given to every cell (--target-data), as `source_data` is."""
    from dataclasses import fields

    from transferlab.data import DataOptions
    from transferlab.training.config import TrainConfig

    seeds = 1 if seeds is None else seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if data.strip() == "digits":
        for key, value in DIGITS_DEFAULTS.items():
            if options.get(key) is None:
                options[key] = value
                logger.info("digits: --%s %s (the demo default)", key.replace("_", "-"), value)
    train_names = {f.name for f in fields(TrainConfig)}
    data_names = {f.name for f in fields(DataOptions)} - {"seed"}
    unknown = set(options) - train_names - data_names
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}")
    train = TrainConfig(**{k: v for k, v in options.items() if k in train_names})
    data_options = DataOptions(seed=train.seed, **{k: v for k, v in options.items() if k in data_names})
    strategy_options = {key: value for key, value in (("source_data", source_data), ("target_data", target_data))
                        if value}
    base = RunConfig(model=model, data=data, weights=weights, train=train, data_options=data_options,
                     strategy_options=strategy_options, head=head or "linear")
    listed = split_strategy_list(strategies) if isinstance(strategies, str) else list(strategies)
    if tune is None and tune_space:
        raise ConfigError("--tune-space needs --tune TRIALS")
    tuning = TuneSpec(trials=tune, space=tune_space or "") if tune is not None else None
    extra = {"scratch_search": [{"bn_stats": train.bn_stats, "lr_scale": 1.0}]} if tuning else {}
    return GridSpec(base=base, strategies=listed, seeds=[train.seed + i for i in range(seeds)], scratch=scratch,
                    scratch_epochs=scratch_epochs, tune=tuning, **extra)


@dataclass
class Cell:
    strategy: str  # the spec as given, or SCRATCH
    seed: int
    run_dir: Path
    config: RunConfig
    # the grid's tracking (tracking.live.GridTracking, picklable), set by run_grid: `for_cell` makes the cell's
    # trainer callback, a context manager that ends the cell's tracked run
    tracker: object = None

    @property
    def label(self) -> str:
        return f"{self.strategy} (seed {self.seed})"


@dataclass
class CellResult:
    cell: Cell
    status: str  # "finished", "failed", "not run"
    error: str | None = None
    metrics: dict | None = None
    seconds: float = 0.0  # wall time in this invocation (0 for a run finished earlier)


def split_strategy_list(text: str) -> list[str]:
    """Split `--strategies` on commas, keeping a spec's own `key=value,key=value` together.

    `linear_probe,l2sp:alpha=0.1,beta=0.01,full` -> ['linear_probe', 'l2sp:alpha=0.1,beta=0.01', 'full']:
    a piece with '=' and no ':' before it continues the previous spec (strategy names never hold '=').
    """
    specs: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        head = piece.split("=", 1)[0]
        if "=" in piece and ":" not in head and "+" not in head and specs:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def safe_name(spec: str) -> str:
    """A folder name for a strategy spec: `freeze:k=4+l2sp:alpha=0.1` -> `freeze-k4+l2sp-alpha0.1`."""
    name = spec.replace(":", "-").replace("=", "").replace(",", "_")
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).strip("._") or "strategy"
    if name != spec.replace(":", "-").replace("=", "").replace(",", "_") or len(name) > 80:
        name = f"{name[:60]}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"  # lossy: keep it unique
    return name


def run_dir_for(out: Path, strategy: str, seed: int) -> Path:
    return out / "runs" / safe_name(strategy) / str(seed)


def plan(spec: GridSpec, out: Path) -> list[Cell]:
    """Cells in run order: each strategy over the seeds, the scratch baseline last."""
    cells = []
    names = {}
    for strategy in spec.strategies:
        folder = safe_name(strategy)
        if folder in names:
            raise ConfigError(f"strategies {names[folder]!r} and {strategy!r} map to the same folder {folder}")
        names[folder] = strategy
        for seed in spec.seeds:
            cfg = copy.deepcopy(spec.base)
            cfg.strategy = strategy
            cfg.train.seed = seed
            cells.append(Cell(strategy, seed, run_dir_for(out, strategy, seed), cfg))
    for name in spec.scratch_candidates():  # every candidate recipe over every seed; configs made lazily
        for seed in spec.seeds:
            cells.append(Cell(name, seed, run_dir_for(out, name, seed), None))
    return cells


# ---- the from-scratch baseline ---------------------------------------------------------------------------
def scratch_support(model: str) -> tuple[str, str]:
    """('weights'|'hf_dir'|'none', reason): how to build `model`'s architecture with random weights, as its
    model family says (`ModelFamily.scratch`)."""
    from transferlab.models import family_of

    family = family_of(model)
    if family is None:
        return "none", f"unknown model {model!r}"
    return family.scratch(model)


def scratch_config(spec: GridSpec, seed: int, out: Path, candidate: str) -> RunConfig:
    """A baseline candidate's run config: the same model entry (same input config and depth groups) with random
    initial weights, every parameter at the base rate (SCRATCH_STRATEGY), the candidate's BatchNorm mode and
    learning rate, and --scratch-epochs (default: the grid's epochs)."""
    from transferlab.models import family_of

    kind, reason = ("given", "") if spec.scratch_init == "given" else scratch_support(spec.base.model)
    recipe = scratch_recipe(candidate)
    cfg = copy.deepcopy(spec.base)
    cfg.strategy = SCRATCH_STRATEGY
    cfg.train.seed = seed
    cfg.train.bn_stats = recipe["bn_stats"]
    cfg.train.lr = spec.base.train.lr * recipe["lr_scale"]
    if spec.scratch_epochs is not None:
        cfg.train.epochs = spec.scratch_epochs
    init_dir = out / "scratch_init"
    if kind == "weights":
        path = init_dir / f"seed{seed}.safetensors"
        if not path.is_file():
            save_tensors(path, family_of(spec.base.model).random_state(spec.base.model, seed))
        cfg.weights = str(path.resolve())
    elif kind == "hf_dir":
        folder = init_dir / f"seed{seed}"
        if not (folder / "config.json").is_file():
            family_of(spec.base.model).write_random_dir(spec.base.model, seed, folder)
        cfg.model = str(folder.resolve())
        cfg.weights = None
    elif kind != "given":
        raise ConfigError(f"cannot build a from-scratch baseline: {reason}; pass --no-scratch")
    return cfg


# ---- running ---------------------------------------------------------------------------------------------
def check_grid_dir(out: Path, spec: GridSpec, resume: bool, given: set[str] | None = None) -> GridSpec:
    """Refuse to mix a new grid into an old one, or into someone else's folder; with resume, continue the
    saved grid (arguments that contradict it are refused, naming the differences). `out` has passed
    check_output_path (run_grid)."""
    state = folder_state(out, GRID_FOLDER)
    if state == "foreign":
        raise ConfigError(foreign_message(out, GRID_FOLDER))
    if resume and state == "new":
        raise ConfigError(f"--resume: {out} holds no comparison to continue; run without --resume to start one")
    saved_file = out / "grid.json"
    existing = [p for p in (out / "runs").glob("*/*") if run_state(p) != "empty"] if (out / "runs").is_dir() else []
    if not resume:
        if existing or saved_file.is_file():
            raise ConfigError(f"{out} already holds a comparison; pass --resume to continue it (finished runs are "
                              "kept) or choose another --out")
        return spec
    if saved_file.is_file():
        saved = GridSpec.from_dict(json.loads(saved_file.read_text()))
        differences = grid_differences(saved, spec, given)
        if differences:
            raise ConfigError(f"--resume: the arguments contradict the comparison in {out}: {'; '.join(differences)}; "
                              "drop them to continue it as it was, or choose another --out")
        return saved
    return spec


def grid_differences(saved: GridSpec, new: GridSpec, given: set[str] | None = None) -> list[str]:
    """What `new` asks for that contradicts the saved grid (strategies, seeds, scratch, the shared run config);
    `given` restricts it to the keys the user passed (None: all)."""
    from transferlab.runs import resume_differences, with_absolute_paths

    out = []
    for key in ("strategies", "seeds", "scratch", "scratch_epochs"):
        if (given is None or key in given) and getattr(saved, key) != getattr(new, key):
            out.append(f"--{key} {getattr(saved, key)!r} in the grid, {getattr(new, key)!r} now")
    if (given is None or "tune" in given) and saved.tune != new.tune:
        was, now = (t.to_dict() if t else None for t in (saved.tune, new.tune))
        out.append(f"--tune {was!r} in the grid, {now!r} now")
    base = with_absolute_paths(copy.deepcopy(new.base))
    for key, (old, now) in resume_differences(with_absolute_paths(copy.deepcopy(saved.base)), base, given).items():
        out.append(f"{key} {old!r} in the grid, {now!r} now")
    return out


def grid_caches(spec: GridSpec, folder: Path | None = None) -> RunCaches:
    """One store of decoded images and frozen-prefix outputs for all cells: the seeds of `linear_probe` share its
    features, and `lp_ft`'s probe phase reuses them (entries are keyed by content, see training/prefix_cache).
    Frozen-prefix entries are also kept as files in --cache-dir when given, else in `folder` (run_parallel's
    DIR/feature_cache, so that processes share them), else in memory only."""
    from transferlab.training.prefix_cache import FeatureStore

    folder = spec.base.train.cache_dir or folder  # --cache-dir: the user's choice comes first
    return RunCaches(features=FeatureStore(spec.base.train.cache_memory_mb * 2**20, folder=folder))


# ---- running in worker processes ---------------------------------------------------------------------------
FEATURE_CACHE = "feature_cache"  # DIR/feature_cache/: the frozen-prefix entries the worker processes share
_worker_caches: RunCaches | None = None  # this worker process's caches (set by _init_worker)


def worker_threads(jobs: int, total: int) -> int:
    """torch threads for each of `jobs` processes sharing `total` (the parent's torch.get_num_threads())."""
    return max(1, total // jobs)


def run_parallel(spec: GridSpec, cells: list[Cell], out: Path, resume: bool, jobs: int,
                 progress: Progress | None = None) -> list[CellResult]:
    """The cells in `jobs` spawned worker processes, torch's threads divided among them; results in plan order.

    Each worker keeps its own caches, with frozen-prefix entries also in DIR/feature_cache/ (or --cache-dir) so
    that cells in other processes find them. A cell is run by the same `run_cell` as in a sequential grid
    (re-seeded, its own config only), so its numbers do not depend on the process or on the cells run before it."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    total = torch.get_num_threads()
    threads = worker_threads(jobs, total)
    if jobs > total:
        logger.warning("--jobs %d is more than the %d thread(s) torch uses here (the cores, or OMP_NUM_THREADS): "
                       "the processes beyond the cores oversubscribe them, and every process runs slower; running "
                       "with 1 thread each", jobs, total)
    logger.info("%d worker processes x %d torch thread(s) each (torch has %d here)", jobs, threads, total)
    progress = GridProgress(len(cells), jobs=jobs, progress=progress)
    results: list[CellResult | None] = [None] * len(cells)
    for i, cell in enumerate(cells):
        if run_state(cell.run_dir) == "finished":  # as run_cell does, without a process
            results[i] = run_cell(spec, cell, out, resume)
            progress.finished(i, results[i])
    level = logging.getLogger("transferlab").getEffectiveLevel()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads, spec, out / FEATURE_CACHE, level))
    interrupted = False
    try:
        pending = {pool.submit(_worker_run_cell, spec, cell, out, resume, i, len(cells)): i
                   for i, cell in enumerate(cells) if results[i] is None}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                results[i] = _future_result(future, cells[i])
                progress.finished(i, results[i])
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted: stopping the worker processes (unfinished runs continue with --resume)")
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return results


def _init_worker(threads: int, spec: GridSpec, cache_folder: Path, log_level: int) -> None:
    """A worker process's start: its share of threads (the env vars for libraries that read them later),
    logging to the parent's stderr, its caches; Ctrl-C is left to the parent, which stops the workers."""
    import signal

    global _worker_caches
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(signal.SIGTERM)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    _worker_caches = grid_caches(spec, folder=cache_folder)


def _die_with_parent(sig: int) -> None:
    """Ask Linux to send `sig` to this worker when the grid process dies (prctl PR_SET_PDEATHSIG): a grid killed
    with SIGKILL, which cannot stop its workers itself, must not leave them training. Elsewhere: nothing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def _worker_run_cell(spec: GridSpec, cell: Cell, out: Path, resume: bool, index: int, total: int) -> CellResult:
    """One cell in a worker process; whatever escapes run_cell comes back as a failed cell."""
    try:
        progress = GridProgress(total, progress=Progress(logger, bar=False))  # the parent draws any bar
        progress.start(index, cell)
        return run_cell(spec, cell, out, resume, progress, _worker_caches)
    except Exception as exc:  # run_cell records a failing run; this failed around it (writing error.json, ...)
        logger.debug("%s", traceback.format_exc())
        return _failed(cell, exc)


def _future_result(future, cell: Cell) -> CellResult:
    """The worker's CellResult, or a failed one when the worker process could not return it (it died)."""
    try:
        return future.result()
    except Exception as exc:  # BrokenProcessPool (a worker was killed: out of memory?), an unpicklable result
        return _failed(cell, exc)


def _failed(cell: Cell, exc: BaseException) -> CellResult:
    """A failed cell for an error that run_cell did not record: logged, and in error.json where it can be."""
    error = f"{type(exc).__name__}: {exc}".strip()
    logger.error("%s failed: %s", cell.label, error)
    try:
        atomic_write_json(cell.run_dir / "error.json", {"strategy": cell.strategy, "seed": cell.seed, "error": error})
    except OSError as write_error:
        logger.error("%s: cannot write error.json: %s", cell.label, write_error)
    return CellResult(cell, "failed", error=error)


def _stop_workers(pool) -> None:
    """Terminate the pool's processes, so that an interrupted grid does not wait for the running cells. Python
    3.11's ProcessPoolExecutor has no public way (3.14 adds terminate_workers); its `_processes` is used."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def _absolute_base(base: RunConfig) -> RunConfig:
    from transferlab.runs import with_absolute_paths

    return with_absolute_paths(copy.deepcopy(base))


def run_cell(spec: GridSpec, cell: Cell, out: Path, resume: bool, progress: "GridProgress | None" = None,
             caches: RunCaches | None = None) -> CellResult:
    state = run_state(cell.run_dir)
    if state == "finished":
        logger.info("%s: finished earlier, kept", cell.label)
        return CellResult(cell, "finished", metrics=read_metrics(cell.run_dir))
    start = time.perf_counter()
    try:
        if cell.config is None:
            cell.config = scratch_config(spec, cell.seed, out, cell.strategy)
        # Model creation (the new head's init) draws from torch's global RNG: seed it per cell, so a cell's
        # result does not depend on which cells ran before it in this process (exact --resume of a grid).
        torch.manual_seed(cell.config.train.seed)
        reset_peak_memory()
        callbacks = [progress.callback()] if progress else []
        tracking = cell.tracker.for_cell(cell.run_dir, cell.strategy, cell.seed) if cell.tracker else None
        with tracking or contextlib.nullcontext():  # tracked: FINISHED after metrics.json, FAILED if it raises
            metrics = finetune(cell.config, cell.run_dir, resume=state == "unfinished",
                               callbacks=[*callbacks, *([tracking] if tracking else [])] or None, caches=caches)
    except (Exception, MemoryError) as exc:  # one bad cell must not stop the grid
        error = f"{type(exc).__name__}: {exc}".strip()
        logger.error("%s failed: %s", cell.label, error)
        logger.debug("%s", traceback.format_exc())
        atomic_write_json(cell.run_dir / "error.json", {"strategy": cell.strategy, "seed": cell.seed,
                                                        "error": error})
        return CellResult(cell, "failed", error=error, seconds=time.perf_counter() - start)
    (cell.run_dir / "error.json").unlink(missing_ok=True)
    return CellResult(cell, "finished", metrics=metrics, seconds=time.perf_counter() - start)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def reset_peak_memory() -> None:
    """Each cell reports its own peak memory, not the grid's so far: on CUDA the allocator's peak is reset; on
    CPU the trainer reports the process's peak RSS, reset here through proc(5) clear_refs 5 (Linux; elsewhere
    the CPU number stays cumulative)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class GridProgress:
    """Logs which run of how many, its epoch, and the time left estimated from the runs finished so far, plus
    whatever other work `progress` declares (compare's report sections); with `jobs` processes (run_parallel),
    runs come back in any order, `jobs` at a time."""

    def __init__(self, total: int, jobs: int = 1, progress: Progress | None = None):
        self.total = total
        self.progress = progress or Progress(logger, bar=False)  # a bar only from one its caller closes
        if "run" in self.progress.phases:  # declared by the caller over several grids (transfer_curve)
            self.progress.phases["run"].parallel = max(1, jobs)
        else:
            self.progress.add("run", total, parallel=jobs)
        self.index = 0
        self.completed = 0  # runs come back (run_parallel)
        self.cell: Cell | None = None

    @property
    def jobs(self) -> int:
        return self.progress.phases["run"].parallel

    @jobs.setter
    def jobs(self, jobs: int) -> None:  # ray_executor learns it once connected
        self.progress.phases["run"].parallel = max(1, jobs)

    def start(self, index: int, cell: Cell) -> None:
        self.index, self.cell = index, cell
        self.progress.start("run")
        self.progress.note(f"run {index + 1}/{self.total}: {cell.label} -> {cell.run_dir}", logger)

    def done(self, result: CellResult) -> None:
        self.progress.finish("run", seconds=result.seconds, timed=result.status == "finished")
        self.progress.note(f"run {self.index + 1}/{self.total}: {result.cell.label} {result.status} in "
                           f"{result.seconds:.0f} s", logger)

    def finished(self, index: int, result: CellResult) -> None:
        """Run `index` came back from a worker process (run_parallel)."""
        self.completed += 1
        self.progress.finish("run", seconds=result.seconds, timed=result.status == "finished")
        self.progress.note(f"run {index + 1}/{self.total}: {result.cell.label} {result.status} in "
                           f"{result.seconds:.0f} s", logger)

    def callback(self) -> Callback:
        return EpochLog(self)


class EpochLog(Callback):
    """Logs each epoch of the current run of a GridProgress (module level, so that it is importable anywhere)."""

    def __init__(self, progress: GridProgress):
        self.progress = progress

    def on_epoch_end(self, trainer, record):
        progress = self.progress
        progress.progress.advance(record["epoch"] / trainer.config.epochs)
        progress.progress.note(f"run {progress.index + 1}/{progress.total}: {progress.cell.label} epoch "
                               f"{record['epoch']}/{trainer.config.epochs}", logger)
