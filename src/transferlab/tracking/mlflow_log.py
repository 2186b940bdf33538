"""Finished runs and grids as MLflow runs, through the client API (no global active run is left behind).

A run: params = its config.json flattened ('train.lr', 'data_options.image_size', ...), one metric series per
numeric history.jsonl field with step = epoch, every numeric leaf of metrics.json ('val.accuracy',
'trainable_params', ...) at step 0, and config.json, history.jsonl, metrics.json as artefacts.
A grid: one parent run (grid.json's strategies, seeds and shared config as params; the report, its tables and
plots as artefacts; each strategy's mean numbers as metrics) and one child run per finished cell.

Runs are found again by tags, so logging twice does not duplicate them: a run whose metrics.json is unchanged
(tag transferlab.metrics_sha256) is left as it is; one whose folder now holds another result (the cell was
re-run) is soft-deleted (restorable in the MLflow UI) and logged anew.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

from transferlab.tracking import TrackingError, grid_cells
from transferlab.tracking.values import RUN_FILES, RunValues, flat_params, run_values, safe_key

logger = logging.getLogger(__name__)

KIND_TAG, FOLDER_TAG, DIGEST_TAG = "transferlab.kind", "transferlab.folder", "transferlab.metrics_sha256"
CELL_TAG, STRATEGY_TAG, SEED_TAG = "transferlab.cell", "transferlab.strategy", "transferlab.seed"
PARENT_TAG = "mlflow.parentRunId"
DEFAULT_EXPERIMENT = "transferlab"  # MLFLOW_EXPERIMENT_NAME, MLflow's own variable, picks another
MAX_PARAM_LENGTH = 6000  # what MLflow >= 2.3 stores; a longer value (a long class list) is cut, and says so
REPORT_FILES = ("report.md", "report.html", "results.csv", "results.json", "runs.csv", "grid.json")
_BATCH = {"metrics": 1000, "params": 100}  # MLflow's log_batch limits per request


def default_uri(folder: Path) -> str:
    """A SQLite database in the output folder: a real store that `mlflow ui` opens, and nothing outside."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def log_run_to_mlflow(target: str | None, run_dir: Path) -> str:
    uri = target or default_uri(run_dir)
    with _mlflow_errors(uri):
        client, experiment = _open(uri)
        values = run_values(run_dir)
        run_id, what = _upsert(client, experiment, values, run_name=run_dir.name, kind="run")
    return f"MLflow: run {run_id} {what} in {uri} (experiment {_experiment_name()}); " \
           f"open it with: mlflow ui --backend-store-uri {uri}"


def log_grid_to_mlflow(target: str | None, grid_dir: Path) -> str:
    uri = target or default_uri(grid_dir)
    with _mlflow_errors(uri):
        client, experiment = _open(uri)
        parent = _parent_run(client, experiment, grid_dir)
        counts = {"logged": 0, "unchanged": 0}
        for strategy, seed, folder in grid_cells(grid_dir):
            tags = {STRATEGY_TAG: strategy, SEED_TAG: str(seed), CELL_TAG: folder.relative_to(grid_dir).as_posix()}
            _, what = _upsert(client, experiment, run_values(folder), run_name=f"{strategy} seed {seed}",
                              kind="cell", tags=tags, parent=parent.info.run_id)
            counts[what] += 1
        _log_report(client, parent, grid_dir, finished=sum(counts.values()))
        client.set_terminated(parent.info.run_id, "FINISHED")
    return (f"MLflow: grid run {parent.info.run_id} with {counts['logged']} child run(s) logged, "
            f"{counts['unchanged']} unchanged, in {uri} (experiment {_experiment_name()}); open it with: "
            f"mlflow ui --backend-store-uri {uri}")


# ---- runs ------------------------------------------------------------------------------------------------
def _upsert(client, experiment: str, values: RunValues, run_name: str, kind: str, tags: dict | None = None,
            parent: str | None = None) -> tuple[str, str]:
    """(run id, 'logged' | 'unchanged'): the run of this folder, logged unless an identical one is there."""
    found = _find(client, experiment, kind, values.folder, parent)
    same = [r for r in found if r.data.tags.get(DIGEST_TAG) == values.digest and r.info.status == "FINISHED"]
    keep = same[0] if same else None
    for run in found:
        if run is not keep:  # another result of this folder, or a logging that was cut short
            logger.info("MLflow: run %s of %s replaced (soft-deleted)", run.info.run_id, values.folder)
            client.delete_run(run.info.run_id)
    if keep is not None:
        return keep.info.run_id, "unchanged"
    return _log_values(client, experiment, values, run_name, kind, tags or {}, parent), "logged"


def _log_values(client, experiment: str, values: RunValues, run_name: str, kind: str, tags: dict,
                parent: str | None) -> str:
    from mlflow.entities import Metric

    tags = {**tags, KIND_TAG: kind, FOLDER_TAG: str(values.folder), **({PARENT_TAG: parent} if parent else {})}
    run_id = client.create_run(experiment, tags=tags, run_name=run_name).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for step, record in values.epochs for k, v in record.items()]
    metrics += [Metric(k, v, now, 0) for k, v in values.final.items()]
    _log_batches(client, run_id, metrics=metrics, params=values.params)
    for name in RUN_FILES:
        if (values.folder / name).is_file():
            client.log_artifact(run_id, str(values.folder / name))
    client.set_tag(run_id, DIGEST_TAG, values.digest)  # last: a run without it was cut short, and is replaced
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _log_batches(client, run_id: str, metrics: list | None = None, params: dict[str, str] | None = None) -> None:
    from mlflow.entities import Param

    listed = [Param(k, _param_value(v)) for k, v in (params or {}).items()]
    for i in range(0, len(listed), _BATCH["params"]):
        client.log_batch(run_id, params=listed[i:i + _BATCH["params"]])
    metrics = metrics or []
    for i in range(0, len(metrics), _BATCH["metrics"]):
        client.log_batch(run_id, metrics=metrics[i:i + _BATCH["metrics"]])


def _param_value(value: str) -> str:
    if len(value) <= MAX_PARAM_LENGTH:
        return value
    marker = f"...[{len(value)} characters, cut]"
    return value[:MAX_PARAM_LENGTH - len(marker)] + marker


def _find(client, experiment: str, kind: str, folder: Path, parent: str | None = None) -> list:
    """The active runs of `kind` logged from `folder` (and under `parent`), oldest first."""
    from mlflow.entities import ViewType

    clauses = [f"tags.`{KIND_TAG}` = '{kind}'"]
    if parent:
        clauses.append(f"tags.`{PARENT_TAG}` = '{parent}'")
    if not any(ch in str(folder) for ch in "'\"\\"):  # else compared below only: no quoting to get wrong
        clauses.append(f"tags.`{FOLDER_TAG}` = '{folder}'")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=" and ".join(clauses),
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        runs += [r for r in page if r.data.tags.get(FOLDER_TAG) == str(folder)]
        token = page.token
        if not token:
            return sorted(runs, key=lambda r: r.info.start_time or 0)


# ---- the grid's parent run --------------------------------------------------------------------------------
def _parent_run(client, experiment: str, grid_dir: Path):
    """The grid folder's parent run, made on the first logging and reused after (compare --resume)."""
    grid = json.loads((grid_dir / "grid.json").read_text(encoding="utf-8"))
    base = {k: v for k, v in grid.get("base", {}).items() if k not in ("strategy", "classes")}
    params = flat_params({"strategies": grid.get("strategies"), "seeds": grid.get("seeds"),
                          "scratch": grid.get("scratch"), **base})
    params = {safe_key(k): v for k, v in params.items()}
    found = _find(client, experiment, "grid", grid_dir)
    if found:
        parent = found[0]
        logged = parent.data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != _param_value(v))
        if changed:  # MLflow params cannot change; a resumed grid may take a new --device, say
            logger.info("MLflow: the grid's params %s differ from the logged ones; kept as logged",
                        ", ".join(changed))
        _log_batches(client, parent.info.run_id, params={k: v for k, v in params.items() if k not in logged})
        return client.get_run(parent.info.run_id)
    run = client.create_run(experiment, tags={KIND_TAG: "grid", FOLDER_TAG: str(grid_dir)}, run_name=grid_dir.name)
    _log_batches(client, run.info.run_id, params=params)
    return client.get_run(run.info.run_id)


def _log_report(client, parent, grid_dir: Path, finished: int) -> None:
    """The report files and plots as artefacts (replacing the earlier ones), and each strategy's mean numbers
    (results.json's summary) as metrics at step = finished cells, logged only where they changed."""
    from mlflow.entities import Metric

    run_id = parent.info.run_id
    for name in REPORT_FILES:
        if (grid_dir / name).is_file():
            client.log_artifact(run_id, str(grid_dir / name))
    plots = grid_dir / "plots"
    for png in sorted(plots.glob("*.png")) if plots.is_dir() else []:
        client.log_artifact(run_id, str(png), artifact_path="plots")
    results_file = grid_dir / "results.json"
    if not results_file.is_file():
        return
    summary = json.loads(results_file.read_text(encoding="utf-8")).get("summary", {})
    now, latest = int(time.time() * 1000), parent.data.metrics
    metrics = []
    for strategy, entry in summary.items():
        for field, value in (entry.get("mean") or {}).items():
            key = safe_key(f"{strategy}.{field}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and latest.get(key) != value:
                metrics.append(Metric(key, float(value), now, finished))
    _log_batches(client, run_id, metrics=metrics)


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
    fails is one line: the run or grid is finished and on disk either way, so a traceback helps nobody."""
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
