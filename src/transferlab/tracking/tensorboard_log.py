"""Finished runs as TensorBoard event files: DIR/tensorboard/ for a run, DIR/tensorboard/<strategy>/<seed>/ for
each finished cell of a grid (or the same layout under tensorboard:LOGDIR).

Scalars: every numeric history.jsonl field per epoch (step = epoch, the names MLflow gets), and every numeric
leaf of metrics.json as final/<name> at the last epoch; the config as a text summary. TensorBoard keeps scalars
as float32. Each event folder holds transferlab_tensorboard.json (the metrics.json digest and the event files
written): logging the same result again writes nothing, logging a new result replaces only those files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from transferlab.tracking import grid_cells
from transferlab.tracking.values import RunValues, run_values

MARKER = "transferlab_tensorboard.json"
MARKER_FORMAT = "transferlab-tensorboard-1"
EVENT_PREFIX = "events.out.tfevents."


def log_run_to_tensorboard(target: str | None, run_dir: Path) -> str:
    logdir = Path(target).expanduser().resolve() if target else run_dir / "tensorboard"
    what = "written" if write_events(logdir, run_values(run_dir)) else "unchanged"
    return f"TensorBoard: event files {what} in {logdir}; open them with: tensorboard --logdir {logdir}"


def log_grid_to_tensorboard(target: str | None, grid_dir: Path) -> str:
    root = Path(target).expanduser().resolve() if target else grid_dir / "tensorboard"
    cells = grid_cells(grid_dir)
    written = sum(write_events(root / folder.relative_to(grid_dir / "runs"), run_values(folder))
                  for _, _, folder in cells)
    return (f"TensorBoard: event files of {written} run(s) written, {len(cells) - written} unchanged, under {root}; "
            f"open them with: tensorboard --logdir {root}")


def write_events(logdir: Path, values: RunValues) -> bool:
    """Event files for one run in `logdir`; False when the files there already hold this result."""
    from torch.utils.tensorboard import SummaryWriter

    from transferlab.safe_io import atomic_write_json

    marker = _read_marker(logdir)
    if marker.get("metrics_sha256") == values.digest:
        return False
    for name in marker.get("files", []):  # our own event files of an earlier result, nothing else
        path = logdir / name
        if name.startswith(EVENT_PREFIX) and "/" not in name and path.is_file():
            path.unlink()
    logdir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(logdir))
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for step, record in values.epochs:
            for key, value in record.items():
                writer.add_scalar(key, value, step)
        last = values.epochs[-1][0] if values.epochs else 0
        for key, value in values.final.items():
            writer.add_scalar(f"final/{key}", value, last)
        rows = "\n".join(f"| {k} | {v} |" for k, v in values.params.items())
        writer.add_text("config", f"| param | value |\n|---|---|\n{rows}", last)
    finally:
        writer.close()
    written = sorted(n for n in set(os.listdir(logdir)) - before if n.startswith(EVENT_PREFIX))
    atomic_write_json(logdir / MARKER, {"format": MARKER_FORMAT, "run": str(values.folder),
                                        "metrics_sha256": values.digest, "files": written})
    return True


def _read_marker(logdir: Path) -> dict:
    try:
        marker = json.loads((logdir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else {}
