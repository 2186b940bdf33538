"""A run as TensorBoard event files, written while it trains: DIR/tensorboard/ for a run,
DIR/tensorboard/<strategy>/<seed>/ for each cell of a grid (or the same layout under tensorboard:LOGDIR).

Scalars: every numeric field of each epoch's history record (step = epoch, the names MLflow gets), written and
flushed as the epoch ends; at the end every numeric leaf of metrics.json as final/<name> at the last epoch. The
config is a text summary at step 0. TensorBoard keeps scalars as float32.

A folder that already holds event files (a resumed run, or an earlier run of an overwritten folder) gets a new
file that starts with TensorBoard's purge marker at step 1: TensorBoard hides the earlier events from step 1 on,
and the run's epochs so far are written again from its history, so each step shows once.
"""
from __future__ import annotations

import json
from pathlib import Path

from transferlab.tracking.values import flat_params, numeric_leaves, safe_key

EVENT_PREFIX = "events.out.tfevents."
FINAL_PREFIX = "final/"


class TensorBoardRun:
    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.writer = None
        self.last_step = 0

    def start(self, folder: Path, config: dict, history: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir.mkdir(parents=True, exist_ok=True)
        earlier = any(p.name.startswith(EVENT_PREFIX) for p in self.logdir.iterdir())
        self.writer = SummaryWriter(log_dir=str(self.logdir), purge_step=1 if earlier else None)
        rows = "\n".join(f"| {safe_key(k)} | {v} |" for k, v in flat_params(config).items())
        self.writer.add_text("config", f"| param | value |\n|---|---|\n{rows}", 0)
        for record in history:
            self.epoch(record)

    def epoch(self, record: dict) -> None:
        step = int(record["epoch"])
        for key, value in numeric_leaves({k: v for k, v in record.items() if k != "epoch"}).items():
            self.writer.add_scalar(safe_key(key), value, step)
        self.writer.flush()  # readable now, not when the run ends
        self.last_step = step

    def finish(self, folder: Path, status: str = "FINISHED") -> None:
        try:
            metrics_file = folder / "metrics.json"
            if metrics_file.is_file():
                final = json.loads(metrics_file.read_text(encoding="utf-8"))
                for key, value in numeric_leaves(final).items():
                    self.writer.add_scalar(FINAL_PREFIX + safe_key(key), value, self.last_step)
        finally:
            self.writer.close()

    def fail(self, status: str = "FAILED") -> None:
        self.writer.close()

    def line(self) -> str:
        return f"TensorBoard: event files in {self.logdir}; open them with: tensorboard --logdir {self.logdir}"
