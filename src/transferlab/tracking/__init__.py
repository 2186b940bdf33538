"""Run tracking: runs and comparison grids logged to MLflow or TensorBoard while they train.

    tracks = parse_tracks(["mlflow"])      # checked before any training: a bad spec or a missing package fails
    tracker = live.LiveTracking(tracks)    # a trainer callback: params at the start, each epoch as it ends
    with tracker:                          # the end: final numbers and files, FINISHED; FAILED when it raises
        finetune(config, out, callbacks=[tracker])

A grid: `with live.GridTracking(tracks) as tracker: compare(spec, out, tracker=tracker)`: a parent run made when
the grid starts, a child run per cell made when the cell starts, wherever it runs (tracking/live.py). The run ids
are kept in the folder's tracking.json; nothing is looked up by path and nothing is deleted. Only the process
with RANK 0 (or no RANK) logs: the trainer calls its callbacks on rank 0 only. mlflow and tensorboard are
optional (`pip install "transferlab[track]"`) and are imported only when a --track spec names them.

Specs: `mlflow` (a SQLite database DIR/mlflow.db next to the output), `mlflow:URI` (any MLflow tracking URI),
`tensorboard` (event files under DIR/tensorboard/), `tensorboard:LOGDIR` (under LOGDIR instead).

Where a track writes is checked before any training too: `track_outputs` names its local paths (a SQLite file and
the artefact folder beside it, a file store, a TensorBoard folder) for outputs.check_outputs, the rule every
output of a command goes through; `check_track_targets` then tries each target once, cheaply: a local one can
be created (a temporary folder made and removed where it would go), an http(s) server accepts a connection
within CONNECT_TIMEOUT_S.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import ConfigError, TransferlabError

logger = logging.getLogger(__name__)

TRACKERS = ("mlflow", "tensorboard")
INSTALL_HINT = 'pip install "transferlab[track]"'
TRACK_HELP = ("log the run(s) while they train to mlflow (a SQLite database OUT/mlflow.db), mlflow:URI (any MLflow tracking "
              "URI), tensorboard (event files under OUT/tensorboard/) or tensorboard:LOGDIR; repeatable; needs "
              f"{INSTALL_HINT}")

__all__ = ["TRACKERS", "TRACK_HELP", "Track", "TrackingError", "check_track_targets", "parse_track", "parse_tracks",
           "track_outputs"]

CONNECT_TIMEOUT_S = 3.0  # one connection attempt to an MLflow server, before any training


class TrackingError(TransferlabError):
    """The tracker refused or could not be reached; the run or grid itself goes on, and is kept on disk."""


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
    """A SQLite store must name a file (its folder is checked by check_track_targets): MLflow finds out only after
    the training, and an in-memory database (sqlite:///, :memory:) keeps nothing."""
    if not track.target.startswith("sqlite:"):
        return  # a server or another store: check_track_targets
    database = _sqlite_database(track.target)
    if not database or database in ("//", ":memory:") or database.startswith("//"):
        raise ConfigError(f"--track {track.spec()}: names no database file (an in-memory store keeps nothing); "
                          f"write sqlite:///PATH/mlflow.db")


def _sqlite_database(uri: str) -> str:
    """The database path of a sqlite: URI (sqlite:///rel.db, sqlite:////abs.db), as MLflow's store opens it."""
    return uri.split("?", 1)[0].removeprefix("sqlite:").removeprefix("///")


def _mlflow_store(target: str) -> tuple[str, str]:
    """('sqlite', database) | ('files', folder) | ('server', URI) | ('other', URI): where an MLflow URI logs."""
    from urllib.parse import unquote, urlsplit

    if target.startswith("sqlite:"):
        return "sqlite", _sqlite_database(target)
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        return "server", target
    if parts.scheme == "file":
        return "files", unquote(parts.path)
    if not parts.scheme and target not in ("databricks", "databricks-uc", "uc"):
        return "files", target  # a plain path: MLflow's file store
    return "other", target  # databricks, postgresql://, mysql://, ...: only MLflow can tell, when it logs


def track_outputs(tracks: list[Track], out: str | Path | None) -> dict[str, tuple[Path, str]]:
    """The local paths each track will write, by a name for messages (`--track SPEC`), with 'file' or 'folder':
    for outputs.check_outputs, so that no tracker writes into or around an input, or onto another output. The
    default places (no target) lie inside `out` (the run or grid folder), by design."""
    base = Path(str(out or ""))
    paths: dict[str, tuple[Path, str]] = {}
    for track in tracks:
        name = f"--track {track.spec()}"
        if track.kind == "tensorboard":
            paths[name] = (Path(track.target).expanduser() if track.target else base / "tensorboard", "folder")
            continue
        kind, where = _mlflow_store(track.target) if track.target else ("sqlite", str(base / "mlflow.db"))
        if kind == "sqlite":  # the database, and the artefact folder mlflow_log puts beside it
            database = Path(where).expanduser()
            paths[name] = (database, "file")
            paths[f"{name}, its artefact folder"] = (database.parent / "mlflow_artifacts", "folder")
        elif kind == "files":
            paths[name] = (Path(where).expanduser(), "folder")
    return paths


def check_track_targets(tracks: list[Track], out: str | Path | None = None) -> None:
    """One cheap try of each explicit target, before any training (MLflow would fail only after it, and retry a
    server for minutes): a SQLite file's folder must exist (or be `out`, the folder the command creates) and a
    local database, file store or TensorBoard folder must be creatable where it goes; an http(s) server must
    accept a connection within CONNECT_TIMEOUT_S. Call it after outputs.check_outputs has passed track_outputs,
    so that the trial folder is never made inside an input. A target inside `out` is not tried: the command
    creates `out`, and a trial folder there could be seen by another process checking the run folder."""
    from transferlab.outputs import overlap

    def within_out(path: Path, how: str = "inside") -> bool:
        return out is not None and bool(str(out).strip()) and overlap(path, out) == how

    for track in tracks:
        if track.target is None:
            continue  # inside the output folder, which the command creates
        if track.kind == "tensorboard":
            folder = Path(track.target).expanduser()
            if not within_out(folder):
                _check_creatable(folder, track)
            continue
        kind, where = _mlflow_store(track.target)
        if kind == "sqlite":
            database = Path(where).expanduser()
            if not database.parent.is_dir() and not within_out(database.parent, "equal"):
                raise ConfigError(f"--track {track.spec()}: the folder {database.parent} does not exist")
            if not within_out(database):
                _check_creatable(database.parent, track)
        elif kind == "files":
            _check_file_store_allowed(track)
            if not within_out(Path(where).expanduser()):
                _check_creatable(Path(where).expanduser(), track)
        elif kind == "server":
            _check_server(track)


def _check_creatable(path: Path, track: Track) -> None:
    """A temporary folder made and removed in the nearest existing folder of `path`: a read-only or special file
    system (/proc), missing permissions or a file where a folder is needed fail here, in one line."""
    import tempfile

    from transferlab.outputs import existing_ancestor

    start = existing_ancestor(path)
    if not start.is_dir():
        raise ConfigError(f"--track {track.spec()}: {start} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".transferlab-probe-", dir=start))
    except OSError as exc:
        raise ConfigError(f"--track {track.spec()}: nothing can be created in {start} "
                          f"({exc.strerror or type(exc).__name__}); choose another place") from None


def _check_file_store_allowed(track: Track) -> None:
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set; say so now, not after training."""
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow without the switch: it takes file stores
        return
    if not MLFLOW_ALLOW_FILE_STORE.get():
        raise ConfigError(f"--track {track.spec()}: this MLflow refuses a folder (file store) as the tracking URI "
                          f"unless MLFLOW_ALLOW_FILE_STORE=true; use mlflow:sqlite:///PATH/mlflow.db")


def _check_server(track: Track) -> None:
    """One TCP connection to the server (or to the proxy that MLflow's requests would use), within
    CONNECT_TIMEOUT_S, name lookup included."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(track.target)
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"--track {track.spec()}: the port is not a number from 0 to 65535") from None
    if not host:
        raise ConfigError(f"--track {track.spec()}: names no server; write mlflow:http://HOST:PORT")
    address, through = (host, port), ""
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        try:
            if proxied.hostname:
                address, through = (proxied.hostname, proxied.port or 80), f" through the proxy {proxy}"
        except ValueError:
            pass  # a proxy setting requests would refuse too: try the server itself
    failure = _connect(address, CONNECT_TIMEOUT_S)
    if failure:
        raise ConfigError(f"--track {track.spec()}: cannot reach {host}:{port}{through} ({failure}); start the "
                          f"tracking server or fix the URI (nothing was trained)")


def _connect(address: tuple[str, int], timeout: float) -> str | None:
    """None when a TCP connection opens within `timeout` seconds, else why not. The try runs in a daemon thread,
    so a name lookup that hangs is bounded too."""
    import socket
    import threading

    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(exc.strerror or str(exc) or type(exc).__name__)

    thread = threading.Thread(target=attempt, daemon=True, name="transferlab-track-probe")
    thread.start()
    thread.join(timeout + 1)
    return result[0] if result else f"no answer within {timeout:g} s"


def _require(kind: str) -> None:
    try:
        if kind == "mlflow":
            import mlflow  # noqa: F401
        else:
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it; torch imports it lazily)
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(f"--track {kind} needs the {kind} package: {INSTALL_HINT}") from None
