"""`transferlab pretrain`: supervised pre-training from random weights, keeping checkpoints along the way.

DIR/ is an ordinary run folder (config.json, checkpoint/, history.jsonl, metrics.json; `runs.finetune` writes
them, so seeding, progress, exact --resume in the middle of an epoch and the errors are a fine-tuning run's) plus

DIR/checkpoints/epoch_E/    every --checkpoint-every epochs and the last: pre-trained folders that every command
                            takes as --model (models.pretrained_dir; short form DIR@E, DIR@last)
DIR/checkpoints/scratch/    the same architecture and input config with random weights (DIR@scratch)
DIR/checkpoints/index.json  the kept epochs in order, with their source train and validation metrics

The input normalisation is measured on the source training split (after --classes and --max-train) and recorded
in the run's config (`cfg_overrides`), so the run reads its data as its checkpoints will later be read.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from transferlab.errors import ConfigError
from transferlab.models import pretrained_dir
from transferlab.models.pretrained_dir import CHECKPOINTS, INDEX_FILE, SCRATCH, epoch_folder_name, is_exported
from transferlab.runs import RunCaches, RunConfig, finetune, read_run_config, with_overrides
from transferlab.training import distributed
from transferlab.safe_io import TEMP_SUFFIX, atomic_write_json
from transferlab.training.trainer import Callback

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "resnet10_cifar"
PRETRAIN_FILE = "pretrain.json"  # DIR/pretrain.json: {"checkpoint_every": E}, for --resume
# One rate for every depth group: nothing is pre-trained yet, so nothing is protected by a lower rate.
PRETRAIN_STRATEGY = "full:backbone_lr=1"
# Measured on CIFAR-10's five source classes with resnet10_cifar (docs/pretraining.md): AdamW at 2e-3 with
# batch 128 trains in minutes on 2 CPU cores; fine-tuning's defaults (1e-3, batch 32) are tuned for adaptation.
PRETRAIN_DEFAULTS = {"epochs": 12, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05, "warmup": 0.05}


def check_pretrainable(config: RunConfig) -> None:
    """pretrain starts an image architecture from random weights and trains a linear source head."""
    from transferlab.models import list_models, pretrained_cfg
    from transferlab.models.own_models import is_registered_module
    from transferlab.models.timm_models import is_architecture

    if config.weights:
        raise ConfigError("pretrain starts from random weights; --weights is for fine-tuning (finetune --model ARCH "
                          "--weights FILE)")
    if is_registered_module(config.model):
        raise ConfigError(f"pretrain trains timm architectures; {config.model!r} was given to register_module: "
                          f"pre-train it in plain torch and register its weights (docs/tutorials/own-model.md)")
    if config.model in list_models():
        if not pretrained_cfg(config.model).weights.startswith("random init"):
            raise ConfigError(f"pretrain starts from random weights: {config.model} is already pre-trained; give "
                              f"an architecture ({DEFAULT_MODEL}, or any timm name such as resnet18)")
    elif not is_architecture(config.model):
        raise ConfigError(f"pretrain trains a timm architecture from random weights; {config.model!r} is not one "
                          f"(e.g. {DEFAULT_MODEL} or resnet18)")
    if config.head != "linear":
        raise ConfigError(f"pretrain trains a linear source head (its checkpoints' classifier), not {config.head!r}")


@torch.no_grad()
def input_statistics(data, batch_size: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the training split's pixels in [0, 1], as the model sees them
    (resized and cropped; the data must have been read with mean 0 and std 1). Float64 sums: 50,000 images of
    32x32 pixels are 5e7 values per channel."""
    from transferlab.training.evaluate import ordered_loader

    total = sq = None
    count = 0
    for batch in ordered_loader(data.train, batch_size, data.collate):
        x = batch["pixel_values"].double()  # (B, 3, H, W)
        if x.numel() == 0:
            continue
        s, q = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if not count:
        raise ConfigError(f"{data.source}: no readable training image to measure the input statistics on")
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def source_overrides(config: RunConfig, caches: RunCaches) -> dict:
    """The run's cfg_overrides: input size, the measured normalisation, the source classes."""
    import dataclasses

    from transferlab.data import load_data
    from transferlab.data._transforms import image_size
    from transferlab.models import model_cfg

    cfg = with_overrides(model_cfg(config.model), {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})
    # Without --augment: the statistics of the images, not of one draw of random crops (which would depend on
    # the process's RNG state, so the same command could record another normalisation).
    options = dataclasses.replace(config.data_options, augment=False)
    raw = load_data(config.data, cfg, options, decoded=caches.decoded)
    mean, std = input_statistics(raw)
    classes = list(raw.classes)
    logger.info("input statistics of %d training images: mean %s, std %s", len(raw.train), mean, std)
    return {"input_size": image_size(cfg, config.data_options), "mean": list(mean), "std": list(std),
            "source_classes": classes, "num_source_classes": len(classes),
            "source_task": f"classification of {len(classes)} classes of {config.data} ({', '.join(classes)})"}


class KeepCheckpoints(Callback):
    """Exports DIR/checkpoints/epoch_E at every `every`-th epoch end and at the last epoch (also an early stop),
    the scratch entry at the start, and the index after each export. A run resumed after a kill that came between
    an epoch's checkpoint and its export writes that export at its start (the weights are the epoch's)."""

    def __init__(self, out: Path, every: int, config: RunConfig):
        self.out, self.every, self.config = Path(out), every, config
        self.folder = self.out / CHECKPOINTS

    def _due(self, trainer, epoch: int) -> bool:
        return epoch % self.every == 0 or epoch == trainer.config.epochs or trainer._should_stop()

    def on_fit_start(self, trainer) -> None:
        self._remove_stale_temps()
        atomic_write_json(self.out / PRETRAIN_FILE, {"checkpoint_every": self.every})
        if not is_exported(self.folder / SCRATCH):
            pretrained_dir.write_folder(self.folder / SCRATCH, trainer.model.cfg.architecture,
                                        self._cfg(trainer, "random init (the architecture's, seeded by the run)"),
                                        None, {"epoch": 0, "run": str(self.out)})
        epoch = trainer.state.epoch
        if epoch and trainer.state.batch_in_epoch == 0 and trainer.state.history and self._due(trainer, epoch) \
                and not is_exported(self.folder / epoch_folder_name(epoch)):
            self._export(trainer, trainer.state.history[-1])

    def on_epoch_end(self, trainer, record: dict) -> None:
        if self._due(trainer, record["epoch"]):
            self._export(trainer, record)

    def _cfg(self, trainer, weights: str):
        import dataclasses

        return dataclasses.replace(trainer.model.cfg, name=trainer.model.cfg.architecture, weights=weights)

    def _export(self, trainer, record: dict) -> None:
        from transferlab.models.timm_models import backbone_state_with_head

        epoch = record["epoch"]
        cfg = self._cfg(trainer, f"transferlab pretrain, epoch {epoch} of {trainer.config.epochs}")
        source = {k: record.get(k) for k in ("train_accuracy", "train_loss", "val_accuracy", "val_loss")}
        pretrained_dir.write_folder(self.folder / epoch_folder_name(epoch), cfg.architecture, cfg,
                                    backbone_state_with_head(trainer.model),
                                    {"epoch": epoch, "source": {"data": self.config.data, **source},
                                     "run": str(self.out)})
        kept = {r["epoch"]: r for r in trainer.state.history
                if is_exported(self.folder / epoch_folder_name(r["epoch"]))}
        atomic_write_json(self.folder / INDEX_FILE, {"epochs": [
            {"epoch": e, "folder": epoch_folder_name(e), "train_accuracy": r.get("train_accuracy"),
             "val_accuracy": r.get("val_accuracy"), "val_loss": r.get("val_loss")} for e, r in sorted(kept.items())]})
        logger.info("kept checkpoint %s (source val accuracy %.4f)", self.folder / epoch_folder_name(epoch),
                    record.get("val_accuracy") or float("nan"))

    def _remove_stale_temps(self) -> None:
        """Temporary folders of exports that a kill interrupted (ours: hidden, with transferlab's suffix)."""
        import shutil

        if not self.folder.is_dir():
            return
        for child in self.folder.iterdir():
            if child.name.startswith(".") and child.name.endswith(TEMP_SUFFIX) and child.is_dir() \
                    and not child.is_symlink():
                shutil.rmtree(child)
                logger.info("removed %s, left by an interrupted export", child)


def _checkpoint_every(out: Path, given: int | None, saved: RunConfig | None) -> int:
    """--checkpoint-every: as given, or (resuming) as the run recorded it in DIR/pretrain.json; a resumed run
    keeps its own (other epochs would give another set of checkpoints)."""
    import json

    if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 1):
        raise ConfigError(f"--checkpoint-every must be a whole number of epochs >= 1, got {given!r}")
    recorded = None
    if saved is not None and (out / PRETRAIN_FILE).is_file():
        try:
            recorded = int(json.loads((out / PRETRAIN_FILE).read_text(encoding="utf-8"))["checkpoint_every"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{out / PRETRAIN_FILE}: not written by transferlab pretrain") from None
    if recorded is not None and given is not None and given != recorded:
        raise ConfigError(f"--resume: --checkpoint-every {given} contradicts the run's {recorded}; drop it to "
                          f"continue the run as it was")
    return recorded or given or 1


def pretrain(config: RunConfig, out: str | Path, checkpoint_every: int | None = None, resume: bool = False,
             overwrite: bool = False, given: set[str] | None = None, callbacks=None) -> dict:
    """Pre-train `config.model` from random weights on `config.data`; returns the run's metrics (also in
    DIR/metrics.json) with the kept checkpoints under "checkpoints". `checkpoint_every`: None is 1, or the
    resumed run's own."""
    check_pretrainable(config)
    caches = RunCaches()
    saved = read_run_config(out) if resume and Path(out).is_dir() else None
    every = _checkpoint_every(Path(out), checkpoint_every, saved)
    if saved is not None:  # measured when the run started: the resumed run reads its data the same way
        config.cfg_overrides = saved.cfg_overrides
    elif not config.cfg_overrides:
        from transferlab.outputs import check_output_path
        from transferlab.runs import _out_state, run_inputs, with_absolute_paths

        config = with_absolute_paths(config)
        # the output's checks before the source data is read (finetune repeats them: they are cheap); rank 0's
        # alone in a distributed run, which may already be writing the run's config when another rank gets here
        if distributed.is_main_process():
            _out_state(check_output_path(out, "--out", run_inputs(config)), resume, overwrite)
        config.cfg_overrides = source_overrides(config, caches)
    keep = KeepCheckpoints(Path(out), every, saved or config)
    metrics = finetune(config, out, resume=resume, overwrite=overwrite, callbacks=[keep, *(callbacks or [])],
                       given=given, caches=caches)
    metrics["checkpoints"] = [epoch_folder_name(e) for e in pretrained_dir.kept_epochs(Path(out))]
    if distributed.is_main_process():
        atomic_write_json(Path(out).resolve() / "metrics.json", metrics)
    return metrics
