"""Run tracking: log finished runs and comparison grids to MLflow or TensorBoard.

    tracks = parse_tracks(["mlflow"])      # checked before any training: a bad spec or a missing package fails
    ...                                    # the run or the grid trains and writes its folder
    log_run(tracks, "out/run")             # one MLflow run / one TensorBoard event folder, from the files
    log_grid(tracks, "out/grid")           # one parent run, one child per finished cell

Everything is read back from the finished folders (config.json, history.jsonl, metrics.json, the report), after
the work is done: a grid's cells may run in worker processes or on other machines, and what is logged is
exactly what the files say. Only the process with RANK 0 (or no RANK) logs: under multi-process training the
other ranks return at once. mlflow and tensorboard are optional (`pip install "transferlab[track]"`) and are
imported only when a --track spec names them.

Specs: `mlflow` (a SQLite database DIR/mlflow.db next to the output), `mlflow:URI` (any MLflow tracking URI),
`tensorboard` (event files under DIR/tensorboard/), `tensorboard:LOGDIR` (under LOGDIR instead).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import ConfigError, TransferlabError
from transferlab.training.distributed import is_main_process

logger = logging.getLogger(__name__)

TRACKERS = ("mlflow", "tensorboard")
INSTALL_HINT = 'pip install "transferlab[track]"'
TRACK_HELP = ("log the finished run(s) to mlflow (a SQLite database OUT/mlflow.db), mlflow:URI (any MLflow tracking "
              "URI), tensorboard (event files under OUT/tensorboard/) or tensorboard:LOGDIR; repeatable; needs "
              f"{INSTALL_HINT}")

__all__ = ["TRACKERS", "TRACK_HELP", "Track", "TrackingError", "log_grid", "log_run", "parse_track",
           "parse_tracks"]


class TrackingError(TransferlabError):
    """The tracker refused or could not be reached; the run or grid itself is finished and kept on disk."""


@dataclass(frozen=True)
class Track:
    """One --track spec: the tracker and where it writes (None: its default place under the output folder)."""

    kind: str  # "mlflow" or "tensorboard"
    target: str | None = None  # MLflow tracking URI, or TensorBoard log folder

    def spec(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


def parse_track(text: str) -> Track:
    """`mlflow`, `mlflow:URI`, `tensorboard` or `tensorboard:LOGDIR`; ConfigError with one line otherwise."""
    raw = (text or "").strip()
    kind, sep, target = raw.partition(":")
    kind = kind.strip().lower()
    if kind not in TRACKERS:
        raise ConfigError(f"--track {text!r}: unknown tracker; use mlflow, mlflow:URI, tensorboard or "
                          f"tensorboard:LOGDIR")
    if sep and not target.strip():
        raise ConfigError(f"--track {text!r}: nothing after '{kind}:'; give a "
                          f"{'tracking URI' if kind == 'mlflow' else 'log folder'}, or write just {kind}")
    if any(not ch.isprintable() for ch in target):
        raise ConfigError(f"--track {text!r} holds control characters")
    return Track(kind, target.strip() if sep else None)


def parse_tracks(specs: list[str] | str | None) -> list[Track]:
    """The --track options (repeatable), parsed, with their packages imported: a bad spec or a missing package
    fails here, before any training."""
    if specs is None:
        return []
    tracks = [parse_track(s) for s in ([specs] if isinstance(specs, str) else specs)]
    for kind in dict.fromkeys(t.kind for t in tracks):
        _require(kind)
    if len(set(tracks)) != len(tracks):
        raise ConfigError(f"--track {next(t.spec() for t in tracks if tracks.count(t) > 1)} given twice")
    for track in tracks:
        if track.kind == "tensorboard" and track.target is not None:
            from transferlab.outputs import check_output_path

            check_output_path(track.target, f"--track {track.spec()}")
        elif track.kind == "mlflow" and track.target is not None:
            _check_sqlite_uri(track)
    return tracks


def _check_sqlite_uri(track: Track) -> None:
    """A SQLite store must name a file in an existing folder: MLflow finds out only after the training, and an
    in-memory database (sqlite:///, :memory:) keeps nothing."""
    if not track.target.startswith("sqlite:"):
        return  # a server or another store: only MLflow can tell, when the run is logged
    database = track.target.split("?", 1)[0].removeprefix("sqlite:").removeprefix("///")
    if not database or database in ("//", ":memory:") or database.startswith("//"):
        raise ConfigError(f"--track {track.spec()}: names no database file (an in-memory store keeps nothing); "
                          f"write sqlite:///PATH/mlflow.db")
    folder = Path(database).expanduser().parent
    if not folder.is_dir():
        raise ConfigError(f"--track {track.spec()}: the folder {folder} does not exist")


def _require(kind: str) -> None:
    try:
        if kind == "mlflow":
            import mlflow  # noqa: F401
        else:
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it; torch imports it lazily)
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(f"--track {kind} needs the {kind} package: {INSTALL_HINT}") from None


def log_run(tracks: list[Track], run_dir: str | Path) -> list[str]:
    """Log one finished run folder to every track; returns one line per track saying where it went."""
    if not tracks or not is_main_process():
        return []
    run_dir = Path(os.path.realpath(run_dir))
    if not (run_dir / "metrics.json").is_file():
        raise TrackingError(f"--track: {run_dir} holds no finished run (no metrics.json); nothing was logged")
    lines = []
    for track in tracks:
        if track.kind == "mlflow":
            from transferlab.tracking.mlflow_log import log_run_to_mlflow

            lines.append(log_run_to_mlflow(track.target, run_dir))
        else:
            from transferlab.tracking.tensorboard_log import log_run_to_tensorboard

            lines.append(log_run_to_tensorboard(track.target, run_dir))
    return lines


def log_grid(tracks: list[Track], grid_dir: str | Path) -> list[str]:
    """Log a comparison folder (after its report is written) to every track: its finished cells, and for MLflow
    a parent run with the report; logging it again (compare --resume) adds only what changed."""
    if not tracks or not is_main_process():
        return []
    grid_dir = Path(os.path.realpath(grid_dir))
    if not (grid_dir / "grid.json").is_file():
        raise TrackingError(f"--track: {grid_dir} holds no comparison (no grid.json); nothing was logged")
    lines = []
    for track in tracks:
        if track.kind == "mlflow":
            from transferlab.tracking.mlflow_log import log_grid_to_mlflow

            lines.append(log_grid_to_mlflow(track.target, grid_dir))
        else:
            from transferlab.tracking.tensorboard_log import log_grid_to_tensorboard

            lines.append(log_grid_to_tensorboard(track.target, grid_dir))
    return lines


def grid_cells(grid_dir: Path) -> list[tuple[str, int, Path]]:
    """(strategy, seed, folder) of every finished cell of a grid folder, in the grid's order."""
    import json

    from transferlab.compare.grid import GridSpec, plan

    spec = GridSpec.from_dict(json.loads((grid_dir / "grid.json").read_text(encoding="utf-8")))
    return [(c.strategy, c.seed, c.run_dir) for c in plan(spec, grid_dir) if (c.run_dir / "metrics.json").is_file()]
