"""A run directory: its config, how to start or resume it, and how to load it back.

DIR/config.json      what was asked (model, data, strategy, training and data options)
DIR/checkpoint/      last.safetensors (resume state), best.safetensors (selected weights)
DIR/history.jsonl    one line per epoch
DIR/metrics.json     written last: its presence marks a finished run
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from transferlab.data import DataOptions, load_data
from transferlab.errors import ConfigError, UnsafeFileError
from transferlab.models import create_model
from transferlab.safe_io import atomic_write_json, load_tensors, remove_stale_temps
from transferlab.strategies import parse_strategy
from transferlab.training.config import TrainConfig
from transferlab.training.trainer import BEST, Trainer

logger = logging.getLogger(__name__)


@dataclass
class RunConfig:
    model: str
    data: str
    strategy: str = "full"
    weights: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    data_options: DataOptions = field(default_factory=DataOptions)
    strategy_options: dict = field(default_factory=dict)  # e.g. {"source_data": PATH} for ewc
    classes: list[str] | None = None  # the target classes, filled in once the data is read

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "strategy": self.strategy, "weights": self.weights,
                "train": asdict(self.train), "data_options": asdict(self.data_options),
                "strategy_options": self.strategy_options, "classes": self.classes,
                "format": "transferlab-run-1"}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(model=d["model"], data=d["data"], strategy=d["strategy"], weights=d.get("weights"),
                   train=TrainConfig(**d["train"]), data_options=DataOptions(**d["data_options"]),
                   strategy_options=d.get("strategy_options", {}), classes=d.get("classes"))


def run_state(out: Path) -> str:
    """'empty', 'unfinished' (a checkpoint but no metrics) or 'finished'."""
    if (out / "metrics.json").is_file():
        return "finished"
    if (out / "checkpoint").is_dir() or (out / "config.json").is_file():
        return "unfinished"
    return "empty"


def check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    state = run_state(out)
    if state == "finished" and not overwrite:
        raise ConfigError(f"{out} holds a finished run; choose another --out or pass --overwrite")
    if state == "unfinished" and not (resume or overwrite):
        raise ConfigError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite")


def prepare(config: RunConfig):
    """Data, model (with the strategy's structural changes) and strategy for a run config."""
    strategy = parse_strategy(config.strategy)  # validate the spec before any loading
    from transferlab.models import pretrained_cfg
    from transferlab.models._registry import list_models

    cfg = pretrained_cfg(config.model) if config.model in list_models() else None
    if cfg is None:
        model = create_model(config.model, 2, weights=config.weights)  # only to learn its input config
        cfg = model.cfg
    tokenizer = None
    if cfg.modality == "text":
        tokenizer = _tokenizer_for(config.model)
    data = load_data(config.data, cfg, config.data_options, tokenizer=tokenizer)
    if config.classes is None:
        config.classes = list(data.classes)
    elif list(data.classes) != list(config.classes):
        raise ConfigError(f"{config.data}: classes {data.classes} differ from the run's {config.classes}")
    # The new head (and any module a strategy adds) starts from --seed alone, not from whatever the process
    # drew before: the same run twice in one process, or a resumed run, builds the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = create_model(config.model, len(data.classes), weights=config.weights)
        model.class_names = list(data.classes)
        strategy.prepare_model(model)
    return data, model, strategy


def _tokenizer_for(model_name: str):
    from transformers import AutoTokenizer

    from transferlab.models.hf_models import minilm_dir

    source = str(minilm_dir()) if model_name == "minilm_l6" else model_name.removeprefix("hf:")
    return AutoTokenizer.from_pretrained(source)


def finetune(config: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
             callbacks=None) -> dict:
    """Train (or resume) a run; returns the metrics also written to DIR/metrics.json."""
    out = Path(out)
    check_out_dir(out, resume, overwrite)
    if resume and (out / "config.json").is_file():
        saved = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
        if saved.to_dict() != config.to_dict():
            logger.warning("--resume: continuing with the run's saved config, not the new arguments")
        config = saved
    if overwrite and run_state(out) != "empty":
        _clear_run(out)
    for folder in (out, out / "checkpoint"):  # temporary files of writes that a kill interrupted
        for stale in remove_stale_temps(folder):
            logger.info("removed %s, left by an interrupted write", stale)
    data, model, strategy = prepare(config)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())
    trainer = Trainer(model, strategy, data, config.train, out, callbacks=callbacks,
                      strategy_options=config.strategy_options)
    metrics = trainer.fit(resume=resume)
    metrics.update(strategy.save_task_module(model, out) or {})
    metrics = {"model": config.model, "strategy": strategy.spec(), "data": config.data,
               "classes": list(data.classes), "seed": config.train.seed, **metrics,
               "skipped_inputs": data.skipped.count, "skipped_files": data.skipped.to_list(),
               "data_summary": data.summary(), "config": config.to_dict()}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _clear_run(out: Path) -> None:
    import shutil

    for name in ("metrics.json", "history.jsonl", "config.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    shutil.rmtree(out / "task_module", ignore_errors=True)  # a PEFT run's module must not outlive its run


def load_run(run_dir: str | Path, data_path: str | None = None):
    """(config, data, model with the selected weights, strategy) of a finished or unfinished run."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    config = RunConfig.from_dict(json.loads(cfg_file.read_text()))
    if data_path:
        config.data = data_path
    data, model, strategy = prepare(config)
    weights = run_dir / "checkpoint" / BEST
    if not weights.is_file():
        raise ConfigError(f"{run_dir} has no trained weights yet ({weights} is missing)")
    try:
        model.load_state_dict(load_tensors(weights))
    except RuntimeError as exc:  # weights of another model: one clear line
        from transferlab.training.trainer import _first_reason

        raise UnsafeFileError(f"{weights}: does not fit the run's model: {_first_reason(exc)}") from None
    model.eval()
    return config, data, model, strategy
