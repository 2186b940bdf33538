"""Runs and grids as MLflow runs while they train, through the client API (no global active run is left behind).

A run (`MlflowRun`): created when training starts (params = its config.json flattened: 'train.lr',
'data_options.image_size', ...), one metric per numeric field of each epoch's history record with step = epoch,
logged as the epoch ends; at the end every numeric leaf of metrics.json as 'final/<name>' at the last epoch,
config.json, history.jsonl and metrics.json as artefacts, and the status FINISHED (FAILED when training raised,
KILLED on Ctrl-C). A grid: one parent run made when the grid starts (grid.json's strategies, seeds and shared
config as params; at the end the report, its tables and plots as artefacts and each strategy's mean numbers as
metrics), and one child run per cell (tag mlflow.parentRunId) made when the cell starts.

A run is never looked up by its folder: the run ids live in the folder's tracking.json (tracking.live), so a
resumed run continues its own MLflow run and nothing else in the store is touched or deleted.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

from transferlab.tracking import TrackingError
from transferlab.tracking.values import RUN_FILES, flat_params, numeric_leaves, safe_key

logger = logging.getLogger(__name__)

KIND_TAG, FOLDER_TAG = "transferlab.kind", "transferlab.folder"  # information only: never used to find a run
CELL_TAG, STRATEGY_TAG, SEED_TAG = "transferlab.cell", "transferlab.strategy", "transferlab.seed"
PARENT_TAG = "mlflow.parentRunId"
DEFAULT_EXPERIMENT = "transferlab"  # MLFLOW_EXPERIMENT_NAME, MLflow's own variable, picks another
MAX_PARAM_LENGTH = 6000  # what MLflow >= 2.3 stores; a longer value (a long class list) is cut, and says so
REPORT_FILES = ("report.md", "report.html", "results.csv", "results.json", "runs.csv", "grid.json")
FINAL_PREFIX = "final/"  # metrics.json's numbers, apart from the per-epoch series of the same name
EPOCH_KEY = "train_loss"  # in every history record: its steps say which epochs a run has logged
_BATCH = {"metrics": 1000, "params": 100}  # MLflow's log_batch limits per request
_RETRIES = (0.5, 1.0, 2.0, 4.0)  # waits when a SQLite store is locked by another writer (compare --jobs)


def default_uri(folder: Path) -> str:
    """A SQLite database in the output folder: a real store that `mlflow ui` opens, and nothing outside."""
    return f"sqlite:///{folder / 'mlflow.db'}"


class MlflowRun:
    """One MLflow run logged while its folder trains. `entry`, once started, is what tracking.json keeps:
    {"tracking_uri", "experiment_id", "run_id"}."""

    def __init__(self, uri: str, run_name: str, tags: dict | None = None, parent: dict | None = None):
        self.uri, self.run_name, self.tags, self.parent = uri, run_name, dict(tags or {}), parent
        self.client = None
        self.entry: dict | None = None
        self.last_step = 0  # the last epoch logged
        self.continued = False

    def start(self, folder: Path, config: dict, history: list[dict], saved: list[dict]) -> None:
        """Continue the run tracking.json names for this store (a resumed run), else create one; log the
        params and any epoch of `history` (restored from the checkpoint) not logged yet."""
        with _mlflow_errors(self.uri):
            self.client, experiment = _open(self.uri)
            run = self._continue(saved)
            if run is None:
                tags = {**self.tags, FOLDER_TAG: str(folder), **({PARENT_TAG: self.parent["run_id"]}
                                                                  if self.parent else {})}
                run = _retry(lambda: self.client.create_run(
                    self.parent["experiment_id"] if self.parent else experiment, tags=tags, run_name=self.run_name))
            self.entry = {"tracking_uri": self.uri, "experiment_id": run.info.experiment_id,
                          "run_id": run.info.run_id}
            _log_new_params(self.client, run, {safe_key(k): v for k, v in flat_params(config).items()})
        for record in history:
            self.epoch(record)

    def _continue(self, saved: list[dict]):
        """The run of the folder's tracking.json for this store, set RUNNING again; None when there is none (or
        it was deleted meanwhile)."""
        from mlflow.exceptions import MlflowException

        entry = next((e for e in saved if e.get("tracking_uri") == self.uri and e.get("run_id")), None)
        if entry is None:
            return None
        try:
            run = self.client.get_run(entry["run_id"])
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            logger.info("MLflow: run %s named in tracking.json is not in %s (or deleted): a new run is made",
                        entry["run_id"], self.uri)
            return None
        _retry(lambda: self.client.update_run(run.info.run_id, status="RUNNING"))
        steps = [m.step for m in self.client.get_metric_history(run.info.run_id, EPOCH_KEY)]
        self.last_step, self.continued = max(steps, default=0), True
        return run

    def epoch(self, record: dict) -> None:
        """The record's numbers at step = its epoch; an epoch logged before (a resumed run) is skipped."""
        from mlflow.entities import Metric

        step = int(record["epoch"])
        if step <= self.last_step:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(safe_key(k), v, now, step)
                   for k, v in numeric_leaves({k: v for k, v in record.items() if k != "epoch"}).items()]
        with _mlflow_errors(self.uri):
            _log_batches(self.client, self.entry["run_id"], metrics=metrics)
        self.last_step = step

    def finish(self, folder: Path, status: str = "FINISHED") -> None:
        """metrics.json's numbers as final/<name> at the last epoch, the run files (and any report files) as
        artefacts, and the final status."""
        from mlflow.entities import Metric

        run_id = self.entry["run_id"]
        with _mlflow_errors(self.uri):
            metrics_file = folder / "metrics.json"
            if metrics_file.is_file():
                now, final = int(time.time() * 1000), json.loads(metrics_file.read_text(encoding="utf-8"))
                _log_batches(self.client, run_id, metrics=[
                    Metric(FINAL_PREFIX + safe_key(k), v, now, self.last_step) for k, v in numeric_leaves(final).items()])
            for name in (*RUN_FILES, *REPORT_FILES):
                if (folder / name).is_file():
                    _retry(lambda: self.client.log_artifact(run_id, str(folder / name)))
            _retry(lambda: self.client.set_terminated(run_id, status))

    def fail(self, status: str = "FAILED") -> None:
        with _mlflow_errors(self.uri):
            _retry(lambda: self.client.set_terminated(self.entry["run_id"], status))

    def line(self) -> str:
        return (f"MLflow: run {self.entry['run_id']} {'continued' if self.continued else 'logged'} in {self.uri} "
                f"(experiment id {self.entry['experiment_id']}); open it with: mlflow ui --backend-store-uri "
                f"{self.uri}")


# ---- the grid's parent run --------------------------------------------------------------------------------
def start_parent(uri: str, grid_dir: Path, saved: list[dict]) -> dict:
    """The grid's parent run (continued when the grid folder's tracking.json names one in this store), set
    RUNNING, with grid.json's params: its tracking.json entry."""
    from mlflow.exceptions import MlflowException

    grid = json.loads((grid_dir / "grid.json").read_text(encoding="utf-8"))
    base = {k: v for k, v in grid.get("base", {}).items() if k not in ("strategy", "classes")}
    params = flat_params({"strategies": grid.get("strategies"), "seeds": grid.get("seeds"),
                          "scratch": grid.get("scratch"), **base})
    with _mlflow_errors(uri):
        client, experiment = _open(uri)
        run = None
        entry = next((e for e in saved if e.get("tracking_uri") == uri and e.get("run_id")), None)
        if entry is not None:
            with contextlib.suppress(MlflowException):
                run = client.get_run(entry["run_id"])
            if run is not None and run.info.lifecycle_stage != "active":
                run = None
        if run is None:
            run = _retry(lambda: client.create_run(experiment, tags={KIND_TAG: "grid", FOLDER_TAG: str(grid_dir)},
                                                   run_name=grid_dir.name))
        else:
            _retry(lambda: client.update_run(run.info.run_id, status="RUNNING"))
        _log_new_params(client, run, {safe_key(k): v for k, v in params.items()})
    return {"tracking_uri": uri, "experiment_id": run.info.experiment_id, "run_id": run.info.run_id}


def end_parent(entry: dict, grid_dir: Path, status: str = "FINISHED") -> str:
    """The report files and plots as artefacts, each strategy's mean numbers, and the parent's final status."""
    uri = entry["tracking_uri"]
    with _mlflow_errors(uri):
        client, _ = _open(uri)
        if status == "FINISHED":
            _log_report(client, client.get_run(entry["run_id"]), grid_dir)
        _retry(lambda: client.set_terminated(entry["run_id"], status))
    return (f"MLflow: grid run {entry['run_id']} ({status}) with a child run per cell in {uri}; open it with: "
            f"mlflow ui --backend-store-uri {uri}")


def _log_new_params(client, run, params: dict[str, str]) -> None:
    """The params this run has not logged yet (MLflow params cannot change: a resumed run that now has another
    --device, say, keeps the logged value, and says so)."""
    logged = run.data.params
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != _param_value(v))
    if changed:
        logger.info("MLflow: the params %s differ from the logged ones; kept as logged", ", ".join(changed))
    _log_batches(client, run.info.run_id, params={k: v for k, v in params.items() if k not in logged})


def _log_report(client, parent, grid_dir: Path) -> None:
    """The report files and plots as artefacts (replacing the earlier ones), and each strategy's mean numbers
    (results.json's summary) as metrics at step = the finished cells, logged only where they changed."""
    from mlflow.entities import Metric

    run_id = parent.info.run_id
    for name in REPORT_FILES:
        if (grid_dir / name).is_file():
            _retry(lambda: client.log_artifact(run_id, str(grid_dir / name)))
    plots = grid_dir / "plots"
    for png in sorted(plots.glob("*.png")) if plots.is_dir() else []:
        _retry(lambda: client.log_artifact(run_id, str(png), artifact_path="plots"))
    results_file = grid_dir / "results.json"
    if not results_file.is_file():
        return
    summary = json.loads(results_file.read_text(encoding="utf-8")).get("summary", {})
    step = len(list((grid_dir / "runs").glob("*/*/metrics.json")))  # the finished cells
    now, latest = int(time.time() * 1000), parent.data.metrics
    metrics = []
    for strategy, entry in summary.items():
        for field, value in (entry.get("mean") or {}).items():
            key = safe_key(f"{strategy}.{field}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and latest.get(key) != value:
                metrics.append(Metric(key, float(value), now, step))
    _log_batches(client, run_id, metrics=metrics)


def _log_batches(client, run_id: str, metrics: list | None = None, params: dict[str, str] | None = None) -> None:
    from mlflow.entities import Param

    listed = [Param(k, _param_value(v)) for k, v in (params or {}).items()]
    for i in range(0, len(listed), _BATCH["params"]):
        _retry(lambda: client.log_batch(run_id, params=listed[i:i + _BATCH["params"]]))
    metrics = metrics or []
    for i in range(0, len(metrics), _BATCH["metrics"]):
        _retry(lambda: client.log_batch(run_id, metrics=metrics[i:i + _BATCH["metrics"]]))


def _retry(call):
    """`call()`, again after a pause while a SQLite store says it is locked (another process writing)."""
    for wait in (*_RETRIES, None):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001  sqlalchemy's OperationalError, wrapped by MLflow
            if wait is None or "locked" not in str(exc).lower():
                raise
            time.sleep(wait)


def _param_value(value: str) -> str:
    if len(value) <= MAX_PARAM_LENGTH:
        return value
    marker = f"...[{len(value)} characters, cut]"
    return value[:MAX_PARAM_LENGTH - len(marker)] + marker


# ---- the store ------------------------------------------------------------------------------------------
def _experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def _open(uri: str):
    """(client, experiment id); the experiment is made when missing, its artefacts next to a SQLite store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = _experiment_name()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client, client.create_experiment(name, artifact_location=_artifact_location(uri))
    if experiment.lifecycle_stage != "active":
        raise TrackingError(f"--track mlflow: experiment {name!r} in {uri} is deleted; restore it or set "
                            f"MLFLOW_EXPERIMENT_NAME to another name")
    return client, experiment.experiment_id


def _artifact_location(uri: str) -> str | None:
    """DIR/mlflow_artifacts for a SQLite store at DIR/x.db (MLflow's default would be ./mlruns, wherever the
    command happens to run); the server's choice for every other store."""
    if not uri.startswith("sqlite:///"):
        return None
    database = uri[len("sqlite:///"):].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return (Path(database).expanduser().resolve().parent / "mlflow_artifacts").as_uri()


@contextlib.contextmanager
def _mlflow_errors(uri: str):
    """MLflow's INFO lines (database set-up, migrations) and warnings kept out of the terminal; a store that
    fails is one line (tracking.live stops that tracker; the run goes on and is on disk), not a traceback."""
    quiet = {name: logging.getLogger(name) for name in ("mlflow", "alembic")}
    levels = {name: lg.level for name, lg in quiet.items()}
    for lg in quiet.values():
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001  any store failure: sqlalchemy, HTTP, permissions
        logger.debug("MLflow logging failed", exc_info=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrackingError(f"--track mlflow: logging to {uri} failed: {reason} (the results are kept on "
                            f"disk)") from None
    finally:
        for name, lg in quiet.items():
            lg.setLevel(levels[name])
