"""The training loop: strategies decide what trains and how fast, the loop does the rest.

Exactness of `--resume`: every decision in an epoch (trainable set, learning rates, shuffling order) is a
function of the epoch number, the seed and the saved state (weights, optimiser, torch RNG), so a run
resumed from its last epoch checkpoint makes the same updates bit for bit on CPU.
"""
from __future__ import annotations

import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from transferlab import faults
from transferlab.errors import ConfigError, TrainingError, UnsafeFileError
from transferlab.nn_utils import is_batchnorm
from transferlab.safe_io import atomic_write_text
from transferlab.strategies import StrategyContext
from transferlab.training.batches import EpochBatches, NoSingletonBatches, SeededItems
from transferlab.training.checkpoint import load_checkpoint, save_checkpoint, save_weights
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import evaluate, ordered_loader, to_device
from transferlab.training.objectives import Classification
from transferlab.training.optim import apply_schedule, build_optimizer, group_lrs, schedule_factor, \
    set_group_base_lrs

logger = logging.getLogger(__name__)

_OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

LAST = "last.safetensors"
BEST = "best.safetensors"


class Callback:
    """Per-run hooks; each does nothing by default. State they need on resume they keep themselves."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_end(self, trainer: "Trainer", record: dict) -> None: ...

    def on_fit_end(self, trainer: "Trainer", metrics: dict) -> None: ...


@dataclass
class FitState:
    epoch: int = 0  # next epoch to run
    step: int = 0
    best_accuracy: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    skipped_steps: list = field(default_factory=list)
    # Inside an epoch (checkpoint_every_steps): batches of the current epoch done, and their running sums, so a
    # run resumed there finishes the epoch with the record an uninterrupted run writes.
    batch_in_epoch: int = 0
    epoch_sums: dict = field(default_factory=dict)


def resolve_device(name: str, fallback: bool = False) -> torch.device:
    """The torch device for --device; ConfigError when it is not here (with `fallback`, for commands that only
    evaluate a run trained elsewhere: the CPU, with a log line)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from None
    problem = _unavailable(device)
    if problem is None:
        return device
    if fallback:
        logger.info("the run's device %s is not available here (%s): using the CPU", name, problem)
        return torch.device("cpu")
    raise ConfigError(f"--device {name}: {problem} (use --device cpu or auto)")


def _unavailable(device: torch.device) -> str | None:
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "no CUDA device is available here"
        if device.index is not None and device.index >= count:
            return f"there are only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "no Apple MPS device is available here"
    return f"transferlab trains on cpu, cuda or mps, not {device.type}"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Trainer:
    def __init__(self, model, strategy, data, config: TrainConfig, out_dir: str | Path,
                 callbacks: list[Callback] | None = None, strategy_options: dict | None = None,
                 objective=None):
        self.model = model
        self.strategy = strategy
        self.data = data
        self.config = config
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoint"
        self.callbacks = callbacks or []
        self.strategy_options = strategy_options or {}
        self.device = resolve_device(config.device)
        self.state = FitState()
        self.optimizer = None
        self.objective = objective or Classification()

    # ---- data ----------------------------------------------------------------------------------
    def train_loader(self, epoch: int, start: int = 0) -> DataLoader:
        # The shuffle order depends on (seed, epoch) only, so a resumed epoch sees the same batches. The loader
        # draws its base seed from `gen` before the sampler's permutation, as DataLoader(shuffle=True) does.
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        sampler = EpochBatches(RandomSampler(self.data.train, generator=gen), self.config.batch_size,
                               self.config.seed, epoch, start=start)
        return DataLoader(SeededItems(self.data.train), batch_sampler=sampler, generator=gen,
                          collate_fn=self.data.collate, **self._worker_options())

    def eval_loader(self, dataset) -> DataLoader:
        return ordered_loader(dataset, self.config.eval_batch_size, self.data.collate, **self._worker_options())

    def _worker_options(self) -> dict:
        workers = self.config.workers
        return {"num_workers": workers, "pin_memory": self.device.type == "cuda",
                "persistent_workers": False, **({"prefetch_factor": 2} if workers else {})}

    def _plain_train_batches(self):
        for batch in self.eval_loader(self.data.train):
            yield to_device(batch, self.device)

    # ---- set-up --------------------------------------------------------------------------------
    def setup(self, resume: bool) -> None:
        torch.manual_seed(self.config.seed)
        self.model.to(self.device)
        if self.config.head_init == "source":
            from transferlab.training.head_init import init_head_from_source

            init_head_from_source(self.model, self.eval_loader(self.data.train), self.device)
        resuming = resume and (self.ckpt_dir / LAST).is_file()
        ctx = StrategyContext(total_epochs=self.config.epochs, train_batches=self._plain_train_batches,
                              device=self.device, options=self.strategy_options, resuming=resuming)
        self.strategy.on_fit_start(self.model, ctx)
        trainable = self.strategy.ever_trainable(self.model, self.config.epochs)
        self.optimizer = build_optimizer(self.model, trainable, self.config,
                                         anchored=self.strategy.anchored_parameters(self.model))
        if resuming:
            self._restore(self.ckpt_dir / LAST)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    def _restore(self, path: Path) -> None:
        model_state, opt_state, trainer_state, strategy_state, rng = load_checkpoint(path)
        try:  # a checkpoint of another model, strategy or version: one clear line, not a traceback
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(opt_state)
            self.strategy.load_state_dict(strategy_state)
            self.state = FitState(**trainer_state)
            torch.set_rng_state(rng["torch"])
            cuda_states = [rng[k] for k in sorted((k for k in rng if k.startswith("cuda")), key=lambda k: int(k[4:]))]
            if cuda_states and torch.cuda.is_available():  # a CPU machine resuming a GPU run has none to set
                torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise UnsafeFileError(f"{path}: does not fit this run, cannot resume from it: "
                                  f"{_first_reason(exc)}") from None
        logger.info("resumed from %s at epoch %d", path, self.state.epoch + 1)

    def _configure_epoch(self, epoch: int) -> set[str] | None:
        trainable = self.strategy.trainable(self.model, epoch)
        for name, p in self.model.named_parameters():
            p.requires_grad_(trainable is None or name in trainable)
        set_group_base_lrs(self.optimizer, self.strategy.lr_scales(self.model, epoch), self.config.lr)
        return trainable

    def _train_mode(self) -> None:
        """Train mode, except the modules of depth groups whose parameters are all frozen, which run in eval
        mode as a whole (dropout off: a linear probe fits its head on the deterministic features it is
        evaluated on), and BatchNorm layers whose parameters are all frozen: their running statistics
        stay as pre-trained. (A frozen layer whose BatchNorm keeps updating its statistics is not frozen:
        its outputs change. `freeze:train_bn=true` makes BN parameters trainable, and so lets them adapt.)
        With `bn_stats="frozen"` every BatchNorm layer stays in inference mode: its weights may train, but
        it normalises with the pre-trained running statistics, as in the fine-tuning recipe of the Keras
        transfer-learning guide for small target sets (small batches give noisy statistics, and a probed
        head keeps seeing the features it was fitted to).
        """
        self.model.train()
        groups = zip(self.model.group_modules(), self.model.grouped_parameters())
        for modules, params in groups:  # a frozen depth group runs as deployed: dropout off
            if params and not any(p.requires_grad for _, p in params):
                for _, module in modules:
                    module.eval()
        if not any(p.requires_grad for p in self.model.backbone.parameters()):
            self.model.backbone.eval()  # also what the root module governs (timm's pre-logits dropout)
        keep_all = self.config.bn_stats == "frozen"
        for module in self.model.modules():
            if is_batchnorm(module):
                if keep_all or not any(p.requires_grad for p in module.parameters(recurse=False)):
                    module.eval()

    # ---- loop ----------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        self.setup(resume)
        self._batches_per_epoch = len(NoSingletonBatches(range(len(self.data.train)), self.config.batch_size))
        total_steps = self.config.epochs * self._batches_per_epoch
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.state.epoch < self.config.epochs:
            if self._should_stop():  # restored from a run that had already stopped early
                logger.info("early stopping: the run had stopped after epoch %d", self.state.epoch)
                break
            epoch = self.state.epoch
            try:
                record = self._run_epoch(epoch, total_steps)
            except (MemoryError, _OutOfMemoryError) as exc:
                raise TrainingError(f"out of memory at step {self.state.step + 1} (epoch {epoch + 1}): "
                                    f"{str(exc).splitlines()[0] if str(exc) else 'MemoryError'}; {self._kept()} "
                                    f"(lower --batch-size or --image-size)") from None
            self.state.history.append(record)
            self.state.epoch = epoch + 1
            stop = self._track_best(record)
            self._save_last()
            self._write_history()
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            if stop:
                logger.info("early stopping after epoch %d (no improvement for %d epochs)", epoch + 1,
                            self.config.patience)
                break
        return self._finish()

    def _run_epoch(self, epoch: int, total_steps: int) -> dict:
        self._configure_epoch(epoch)
        self._train_mode()
        done = self.state.batch_in_epoch  # > 0 when resuming inside this epoch
        partial = self.state.epoch_sums or {}
        sums = {"loss": partial.get("loss", 0.0), "correct": partial.get("correct", 0), "n": partial.get("n", 0)}
        term_sums: dict[str, float] = dict(partial.get("terms", {}))
        seconds_before = partial.get("seconds", 0.0)
        start = time.perf_counter()
        progress = _progress(self.train_loader(epoch, start=done), f"epoch {epoch + 1}/{self.config.epochs}")
        for position, batch in enumerate(progress, start=done):
            if batch["labels"].numel() > 0:
                self._train_step(batch, epoch, total_steps, sums, term_sums)
            self.state.batch_in_epoch = position + 1
            if self._checkpoint_due():
                self.state.epoch_sums = {**sums, "terms": dict(term_sums),
                                         "seconds": seconds_before + time.perf_counter() - start}
                self._save_last()
            if hasattr(progress, "set_postfix") and sums["n"]:
                progress.set_postfix(loss=f"{sums['loss'] / sums['n']:.4f}")
        seconds = seconds_before + time.perf_counter() - start
        self.state.train_seconds += seconds
        self.state.batch_in_epoch, self.state.epoch_sums = 0, {}
        val = evaluate(self.model, self.eval_loader(self.data.val), self.device, self.objective)
        n = max(sums["n"], 1)
        record = {
            "epoch": epoch + 1,
            "train_loss": sums["loss"] / n,
            "train_accuracy": None if sums["correct"] is None else sums["correct"] / n,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "lr": group_lrs(self.optimizer),
            "seconds": seconds, "samples_per_second": sums["n"] / seconds if seconds > 0 else 0.0,
            "trainable_params": self.model.count_parameters()[0],
            **{k: v / n for k, v in term_sums.items()},
        }
        logger.info("epoch %d/%d: train loss %.4f acc %s | val loss %.4f acc %s | %.1f samples/s",
                    epoch + 1, self.config.epochs, record["train_loss"], _fmt(record["train_accuracy"]),
                    val["loss"], _fmt(val["accuracy"]), record["samples_per_second"])
        return record

    def _checkpoint_due(self) -> bool:
        """A mid-epoch checkpoint every checkpoint_every_steps optimiser steps (the epoch's end writes its own)."""
        every = self.config.checkpoint_every_steps
        return every > 0 and self.state.step > 0 and self.state.step % every == 0 \
            and self.state.batch_in_epoch < self._batches_per_epoch

    def _train_step(self, batch: dict, epoch: int, total_steps: int, sums: dict, term_sums: dict) -> None:
        batch = to_device(batch, self.device)
        poison = faults.on_step(self.state.step + 1)  # test-only fault injection; no-op otherwise
        apply_schedule(self.optimizer, schedule_factor(self.state.step, total_steps, self.config))
        logits = self.model(batch)
        task_loss = self.objective.loss(logits, batch["labels"])
        terms = {**self.model.head.loss_terms(), **self.strategy.loss_terms(self.model, batch, logits)}
        loss = task_loss + sum(terms.values()) if terms else task_loss
        if poison:
            loss = loss * float("nan")
        if not torch.isfinite(loss):
            self._handle_nonfinite(loss, epoch)
            self.state.step += 1
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A finite loss can still give inf/NaN gradients; one such step would poison every weight.
        # (max_norm=inf only measures: the clip coefficient is clamped to exactly 1.)
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                              self.config.grad_clip if self.config.grad_clip > 0 else math.inf)
        if not torch.isfinite(norm):
            self._handle_nonfinite(norm, epoch, what="gradient norm")
            self.state.step += 1
            return
        try:
            self.optimizer.step()
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise
            raise TrainingError(f"the optimiser step overflowed at step {self.state.step + 1} (epoch "
                                f"{epoch + 1}): the learning rate times its group's scale is too large for "
                                f"float32; {self._kept()} (lower --lr)") from None
        self.state.step += 1
        n = batch["labels"].numel()
        sums["loss"] += task_loss.item() * n
        correct = self.objective.correct(logits, batch["labels"])
        sums["correct"] = None if correct is None or sums["correct"] is None else sums["correct"] + correct
        sums["n"] += n
        for k, v in terms.items():
            term_sums[k] = term_sums.get(k, 0.0) + v.item() * n

    def _handle_nonfinite(self, value: torch.Tensor, epoch: int, what: str = "loss") -> None:
        where = f"step {self.state.step + 1} (epoch {epoch + 1})"
        if self.config.on_nonfinite == "skip":
            logger.warning("non-finite %s (%s) at %s: step skipped", what, value.item(), where)
            self.state.skipped_steps.append(self.state.step + 1)
            return
        raise TrainingError(f"{what} became {value.item()} at {where}; the run stopped, {self._kept()} "
                            f"(lower --lr, or --on-nonfinite skip)")

    def _kept(self) -> str:
        last = self.ckpt_dir / LAST
        return (f"the last good checkpoint is {last} (continue with --resume)" if last.is_file()
                else "no checkpoint was written yet")

    def _track_best(self, record: dict) -> bool:
        acc, loss = record["val_accuracy"], record["val_loss"]
        if self.objective.improves(acc, loss, self.state.best_accuracy, self.state.best_loss):
            self.state.best_accuracy, self.state.best_loss = acc, loss
            self.state.best_epoch = record["epoch"]
            self.state.epochs_without_improvement = 0
            save_weights(self.ckpt_dir / BEST, self.model)
        else:
            self.state.epochs_without_improvement += 1
        return self._should_stop()

    def _should_stop(self) -> bool:
        return 0 < self.config.patience <= self.state.epochs_without_improvement

    def _save_last(self) -> None:
        save_checkpoint(self.ckpt_dir / LAST, self.model, self.optimizer, vars(self.state),
                        self.strategy.state_dict())

    def _write_history(self) -> None:
        import json

        atomic_write_text(self.out_dir / "history.jsonl",
                          "".join(json.dumps(r) + "\n" for r in self.state.history))

    def _finish(self) -> dict:
        from transferlab.safe_io import load_tensors

        final_train_accuracy = self.state.history[-1]["train_accuracy"] if self.state.history else float("nan")
        self.model.load_state_dict(load_tensors(self.ckpt_dir / BEST))
        val = evaluate(self.model, self.eval_loader(self.data.val), self.device, self.objective)
        test = (evaluate(self.model, self.eval_loader(self.data.test), self.device, self.objective)
                if self.data.test else None)
        trainable = self.strategy.ever_trainable(self.model, self.config.epochs)
        total = sum(p.numel() for p in self.model.parameters())
        n_trainable = sum(p.numel() for n, p in self.model.named_parameters()
                          if trainable is None or n in trainable)
        samples = sum(r["samples_per_second"] * r["seconds"] for r in self.state.history)
        metrics = {
            "val": {"accuracy": val["accuracy"], "loss": val["loss"], "n": val["n"]},
            "test": {"accuracy": test["accuracy"], "loss": test["loss"], "n": test["n"]} if test else None,
            "trainable_params": n_trainable, "total_params": total, "trainable_share": n_trainable / total,
            "train_seconds": self.state.train_seconds, "epochs_run": len(self.state.history),
            "best_epoch": self.state.best_epoch, "final_train_accuracy": final_train_accuracy,
            "samples_per_second": samples / self.state.train_seconds if self.state.train_seconds else 0.0,
            "peak_memory_mb": peak_memory_mb(self.device), "skipped_steps": self.state.skipped_steps,
        }
        for cb in self.callbacks:
            cb.on_fit_end(self, metrics)
        return metrics


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _first_reason(exc: BaseException) -> str:
    """The informative line of a load_state_dict error (its first line only names the model class)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:300]


def _progress(iterable, desc: str):
    """A progress bar on a terminal; plain (per-epoch) log lines otherwise."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False)
    return iterable
