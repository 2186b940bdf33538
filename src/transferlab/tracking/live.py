"""Tracking while a run trains: a trainer callback for a run, and the parent run of a comparison grid.

    tracker = LiveTracking(parse_tracks(["mlflow"]))
    with tracker:                                   # FAILED (KILLED on Ctrl-C) when the block raises; re-raised
        finetune(config, out, callbacks=[tracker])  # params at the start, each epoch's numbers as it ends
    # the block ended: metrics.json's numbers and the run's files logged, the run FINISHED

The hooks (on_fit_start, on_epoch_end) are the trainer's Callback interface, called on rank 0 only; the end is
the `with` block's because metrics.json is written after the trainer returns, and an error after training (or
before it: the data) must mark the run FAILED too.

The run ids are kept in the run folder, DIR/tracking.json ({"format": ..., "mlflow": [{"tracking_uri",
"experiment_id", "run_id"}, ...], "tensorboard": [LOGDIR, ...]}; a list, as --track mlflow:URI is repeatable):
`--resume` continues the MLflow run that file names for the same tracking URI, and logs the epochs after the last
one that run has (a run killed between its checkpoint and the epoch's logging gets that epoch from the history
restored with the checkpoint). Nothing is ever looked up by folder path, and nothing is deleted. --overwrite
removes the file (outputs.RUN_FOLDER), so the new run is a new MLflow run.

A grid (`GridTracking`): run_grid calls start(grid_dir) once the folder is checked: one parent run per MLflow
store, its id in GRID/tracking.json; each cell, wherever it runs (this process, a --jobs worker, a Ray task:
the GridTracking travels with the cell, pickled, holding only names and ids), gets a LiveTracking whose MLflow
runs are children of the parent (tag mlflow.parentRunId), and TensorBoard files under
<logdir>/<strategy>/<seed>/. At the end the report files go to the parent.

A tracker that fails while the run trains is a warning: its logging stops and the training goes on (the results
are on disk); `failures` names it, and the CLI exits with one error line after the run's summary.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transferlab.safe_io import atomic_write_json
from transferlab.tracking import Track, TrackingError
from transferlab.training.trainer import Callback

logger = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"
TRACKING_FORMAT = "transferlab-tracking-1"


def read_tracking_file(folder: Path) -> dict:
    """The folder's tracking.json ({} when there is none, or it is not ours)."""
    try:
        saved = json.loads((folder / TRACKING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) and saved.get("format") == TRACKING_FORMAT else {}


def write_tracking_file(folder: Path, mlflow: list[dict], tensorboard: list[str]) -> None:
    """tracking.json with these entries; an entry of another store kept from before stays (a run tracked to two
    stores over its resumes keeps both ids)."""
    saved = read_tracking_file(folder)
    uris = {e["tracking_uri"] for e in mlflow}
    kept = [e for e in saved.get("mlflow", []) if isinstance(e, dict) and e.get("tracking_uri") not in uris]
    logdirs = list(dict.fromkeys([*tensorboard, *saved.get("tensorboard", [])]))
    atomic_write_json(folder / TRACKING_FILE, {"format": TRACKING_FORMAT, "mlflow": [*mlflow, *kept],
                                               "tensorboard": logdirs})


def _status(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


class LiveTracking(Callback):
    """The --track specs of one run, logged while it trains (see the module docstring). `run_name`: MLflow's
    (default: the folder's name); `tags`: extra MLflow tags; `parents`: {tracking URI: the parent's tracking.json
    entry} for a grid's cell; `logdirs`: {track: TensorBoard folder} where it is not the track's own place."""

    def __init__(self, tracks: list[Track], run_name: str | None = None, tags: dict | None = None,
                 parents: dict[str, dict] | None = None, logdirs: dict[Track, Path] | None = None,
                 kind: str = "run"):
        self.tracks = list(tracks)
        self.run_name, self.tags, self.kind = run_name, dict(tags or {}), kind
        self.parents, self.logdirs = dict(parents or {}), dict(logdirs or {})
        self.folder: Path | None = None
        self.sinks: list = []  # MlflowRun / TensorBoardRun, those still working
        self.failures: list[str] = []

    # ---- the trainer's hooks (rank 0 only) ------------------------------------------------------------
    def on_fit_start(self, trainer) -> None:
        self.folder = Path(os.path.realpath(trainer.out_dir))
        config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        history = list(trainer.state.history)  # restored from the checkpoint on --resume
        saved = read_tracking_file(self.folder)
        self.sinks = []
        for track in self.tracks:
            sink = self._sink(track)
            if track.kind == "mlflow":
                self._call(sink, "start", self.folder, config, history, saved.get("mlflow", []), add=True)
            else:
                self._call(sink, "start", self.folder, config, history, add=True)
        mlflow = [s.entry for s in self.sinks if getattr(s, "entry", None)]
        logdirs = [str(s.logdir) for s in self.sinks if hasattr(s, "logdir")]
        try:
            write_tracking_file(self.folder, mlflow, logdirs)
        except OSError as exc:
            self._failed("tracking.json", exc)

    def on_epoch_end(self, trainer, record: dict) -> None:
        for sink in list(self.sinks):
            self._call(sink, "epoch", record)

    # ---- the end: the caller's `with` block -----------------------------------------------------------------
    def __enter__(self) -> "LiveTracking":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        status = _status(exc)
        for sink in list(self.sinks):
            if status == "FINISHED":
                self._call(sink, "finish", self.folder, status)
            else:
                self._call(sink, "fail", status)
        return False  # an exception goes on

    def lines(self) -> list[str]:
        """Where each working tracker logged, one line each."""
        return [sink.line() for sink in self.sinks]

    def raise_failures(self) -> None:
        if self.failures:
            raise TrackingError(self.failures[0])

    # ---- inside -------------------------------------------------------------------------------------------
    def _sink(self, track: Track):
        if track.kind == "mlflow":
            from transferlab.tracking.mlflow_log import KIND_TAG, MlflowRun, default_uri

            uri = track.target or default_uri(self.folder)
            return MlflowRun(uri, self.run_name or self.folder.name, {**self.tags, KIND_TAG: self.kind},
                             parent=self.parents.get(uri))
        from transferlab.tracking.tensorboard_log import TensorBoardRun

        logdir = self.logdirs.get(track) or \
            (Path(track.target).expanduser().resolve() if track.target else self.folder / "tensorboard")
        return TensorBoardRun(logdir)

    def _call(self, sink, method: str, *args, add: bool = False) -> None:
        """sink.method(*args); a failure stops that tracker (a warning), never the training."""
        try:
            getattr(sink, method)(*args)
        except Exception as exc:  # noqa: BLE001  a store or a folder that fails: the run goes on
            if sink in self.sinks:
                self.sinks.remove(sink)
            self._failed(type(sink).__name__, exc)
            return
        if add:
            self.sinks.append(sink)

    def _failed(self, what: str, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, TrackingError) else \
            f"--track: {what} failed: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}"
        logger.warning("%s; its logging stopped, the run goes on (its results are kept on disk)", reason)
        logger.debug("tracking failed", exc_info=exc)
        self.failures.append(reason)


class GridTracking:
    """The --track specs of a comparison grid: `with GridTracking(tracks) as tracker: compare(..., tracker=...)`;
    run_grid calls start(grid_dir) before any cell runs and for_cell(...) in whichever process runs the cell.
    Picklable: only the specs, the grid folder and the parents' ids."""

    def __init__(self, tracks: list[Track]):
        self.tracks = list(tracks)
        self.grid_dir: Path | None = None
        self.parents: dict[str, dict] = {}  # tracking URI -> the parent run's tracking.json entry
        self.failures: list[str] = []
        self._lines: list[str] = []

    def start(self, grid_dir: str | Path) -> None:
        """The parent run in each MLflow store (continued when GRID/tracking.json names one there), RUNNING."""
        from transferlab.tracking.mlflow_log import default_uri, start_parent

        self.grid_dir = Path(os.path.realpath(grid_dir))
        saved = read_tracking_file(self.grid_dir).get("mlflow", [])
        for track in self.tracks:
            if track.kind != "mlflow":
                continue
            uri = track.target or default_uri(self.grid_dir)
            try:
                self.parents[uri] = start_parent(uri, self.grid_dir, saved)
            except TrackingError as exc:
                logger.warning("%s; the grid runs without it", exc)
                self.failures.append(str(exc))
        write_tracking_file(self.grid_dir, list(self.parents.values()),
                            [str(self._tensorboard_root(t)) for t in self.tracks if t.kind == "tensorboard"])

    def for_cell(self, run_dir: Path, strategy: str, seed: int) -> LiveTracking:
        """The tracking of one cell: MLflow child runs of the parents, TensorBoard under <root>/<strategy>/<seed>."""
        from transferlab.tracking.mlflow_log import CELL_TAG, SEED_TAG, STRATEGY_TAG, default_uri

        run_dir = Path(os.path.realpath(run_dir))
        relative = run_dir.relative_to(self.grid_dir)
        # the grid's store (`mlflow` alone: GRID/mlflow.db, not the cell's folder); a store whose parent could not
        # be made is left out (its failure is the grid's)
        stores = [Track("mlflow", t.target or default_uri(self.grid_dir)) for t in self.tracks if t.kind == "mlflow"]
        boards = [t for t in self.tracks if t.kind == "tensorboard"]
        tracks = [*(t for t in stores if t.target in self.parents), *boards]
        logdirs = {t: self._tensorboard_root(t) / relative.relative_to("runs") for t in boards}
        return LiveTracking(tracks, run_name=f"{strategy} seed {seed}", kind="cell",
                            tags={STRATEGY_TAG: strategy, SEED_TAG: str(seed), CELL_TAG: relative.as_posix()},
                            parents=self.parents, logdirs=logdirs)

    def _tensorboard_root(self, track: Track) -> Path:
        return Path(track.target).expanduser().resolve() if track.target else self.grid_dir / "tensorboard"

    def __enter__(self) -> "GridTracking":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.grid_dir is None:  # refused before the grid started: no parent was made
            return False
        from transferlab.tracking.mlflow_log import end_parent

        status = _status(exc)
        for entry in self.parents.values():
            try:
                self._lines.append(end_parent(entry, self.grid_dir, status))
            except TrackingError as exc_:
                logger.warning("%s", exc_)
                self.failures.append(str(exc_))
        for track in self.tracks:
            if track.kind == "tensorboard":
                root = self._tensorboard_root(track)
                self._lines.append(f"TensorBoard: event files of each cell under {root}; open them with: "
                                   f"tensorboard --logdir {root}")
        return False

    def lines(self) -> list[str]:
        return list(self._lines)

    def raise_failures(self) -> None:
        if self.failures:
            raise TrackingError(self.failures[0])
