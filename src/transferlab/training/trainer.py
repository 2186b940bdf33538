"""The training loop: strategies decide what trains and how fast, the loop does the rest.

`Trainer.fit` reads top-down: set up (`setup`), then for each epoch train (`_train_epoch`), evaluate
(`_evaluate`) and checkpoint (`_end_epoch`), then finish (`_finish`: the selected weights on val and test).
Two parts live beside it: the frozen-prefix cache of a run (which epochs train from cached outputs of their
frozen leading groups, and those outputs) is `CacheSession` in training/prefix_cache.py, and the bookkeeping of
several processes (reductions, gathers, the DDP wrapper, a lost peer) is in training/distributed.py.

Exactness of `--resume`: every decision in an epoch (trainable set, learning rates, shuffling order) is a
function of the epoch number, the seed and the saved state (weights, optimiser, torch RNG), so a run
resumed from its last epoch checkpoint makes the same updates bit for bit on CPU.

Several processes (torchrun): each rank trains on its rows of the same global batches through
DistributedDataParallel, evaluates its block of each split, and the sums are reduced; rank 0 alone writes
(checkpoints, history, best weights) and runs the callbacks. The wrapper is rebuilt whenever the trainable set
changes (a gradual_unfreeze or lp_ft phase). A run folder must be on a file system that every rank sees.
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
from transferlab.safe_io import atomic_write_text, save_tensors
from transferlab.strategies import StrategyContext
from transferlab.training import distributed
from transferlab.training.batches import EpochBatches, NoSingletonBatches, RankRows, SeededItems
from transferlab.training.bn_mode import batchnorm_trains
from transferlab.training.checkpoint import load_checkpoint, save_checkpoint, save_weights
from transferlab.training.config import TrainConfig
from transferlab.training.evaluate import evaluate, ordered_loader, to_device
from transferlab.training.objectives import Classification
from transferlab.training.optim import apply_schedule, build_optimizer, group_lrs, restart_steps, \
    schedule_factor, set_group_base_lrs
from transferlab.training.precision import Precision, to_channels_last, use_channels_last
from transferlab.training.prefix_cache import CacheSession, FeatureStore, cached_loader
from transferlab.training.target import TargetData, TargetStream

logger = logging.getLogger(__name__)

_OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

LAST = "last.safetensors"
BEST = "best.safetensors"
EXAMPLES = "examples.safetensors"  # DIR/examples.safetensors: per-example correctness of the selected weights


class Callback:
    """Per-run hooks; each does nothing by default. State they need on resume they keep themselves. In a
    distributed run they are called on rank 0 only (they write files and log)."""

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
    scaler: dict = field(default_factory=dict)  # fp16's gradient scaler (scale, growth tracker)
    cache_seconds: float = 0.0  # spent computing frozen-prefix cache entries
    world_size: int = 1  # processes that trained the run (torchrun); a resume with another count says so


class Trainer:
    def __init__(self, model, strategy, data, config: TrainConfig, out_dir: str | Path,
                 callbacks: list[Callback] | None = None, strategy_options: dict | None = None,
                 objective=None, feature_store: FeatureStore | None = None, target: TargetData | None = None):
        self.model = model
        self.strategy = strategy
        self.data = data
        self.config = config
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoint"
        self.callbacks = callbacks or []
        self.strategy_options = strategy_options or {}
        self.world = distributed.world()
        self.device = distributed.rank_device(resolve_device(config.device), self.world)
        self.state = FitState()
        self.optimizer = None
        self.objective = objective or Classification()
        self.precision: Precision | None = None
        self.channels_last = False
        self.store = feature_store  # the frozen-prefix cache's store; a grid passes one to all of its cells
        self.cache: CacheSession | None = None  # the run's frozen-prefix cache (built in setup)
        self.ddp = distributed.Wrapper()  # DistributedDataParallel over the model, for its trainable set now
        self._restarts: list[int] = []  # global steps where the schedule restarts (set in _fit from the strategy)
        self.target = target  # unlabelled target data (--target-data), read by strategies that need it
        self.target_stream: TargetStream | None = None  # its batch for each global step (built in setup)

    # ---- the run: set up, for each epoch train / evaluate / checkpoint, finish ---------------------
    def fit(self, resume: bool = False) -> dict:
        try:
            return self._fit(resume)
        except RuntimeError as exc:
            if not (self.world.active and distributed.lost_peer(exc)):
                raise
            raise TrainingError(f"lost contact with another training process at step {self.state.step + 1}: "
                                f"{str(exc).splitlines()[0][:200]}; {self._kept()}") from None

    def _fit(self, resume: bool) -> dict:
        self.setup(resume)
        total_steps = self._plan_steps()
        for cb in self._callbacks():
            cb.on_fit_start(self)
        while self.state.epoch < self.config.epochs:
            if self._should_stop():  # restored from a run that had already stopped early
                logger.info("early stopping: the run had stopped after epoch %d", self.state.epoch)
                break
            record = self._epoch(self.state.epoch, total_steps)  # train, evaluate
            if self._end_epoch(record):  # best weights, checkpoint, history, callbacks; True: stop early
                break
        return self._finish()

    def _plan_steps(self) -> int:
        """Optimiser steps of the whole run; also sets the batches per epoch and the schedule's restarts."""
        self._batches_per_epoch = len(NoSingletonBatches(range(len(self.data.train)), self.global_batch_size,
                                                         min_last=self.world.size))
        # phases the strategy schedules on their own (lp_ft's fine-tuning): a function of the spec and the epochs
        self._restarts = restart_steps(self.strategy, self.config.epochs, self._batches_per_epoch)
        return self.config.epochs * self._batches_per_epoch

    def _epoch(self, epoch: int, total_steps: int) -> dict:
        try:
            return self._run_epoch(epoch, total_steps)
        except (MemoryError, _OutOfMemoryError) as exc:
            raise TrainingError(f"out of memory at step {self.state.step + 1} (epoch {epoch + 1}): "
                                f"{str(exc).splitlines()[0] if str(exc) else 'MemoryError'}; {self._kept()} "
                                f"(lower --batch-size or --image-size)") from None

    def _end_epoch(self, record: dict) -> bool:
        """The epoch's record kept, the best weights and the checkpoint written; True when the run stops early."""
        self.state.history.append(record)
        self.state.epoch = record["epoch"]
        stop = self._track_best(record)
        self._save_last()
        self._write_history()
        for cb in self._callbacks():
            cb.on_epoch_end(self, record)
        if stop:
            logger.info("early stopping after epoch %d (no improvement for %d epochs)", record["epoch"],
                        self.config.patience)
        return stop

    def _callbacks(self) -> list[Callback]:
        return self.callbacks if self.world.is_main else []

    # ---- set-up --------------------------------------------------------------------------------
    def setup(self, resume: bool) -> None:
        """Join the job, place the model, start the strategy and build the optimiser; with `resume`, continue
        from the last checkpoint when there is one."""
        self.world = distributed.init(self.device)
        if self.world.active and len(self.data.train) < self.world.size:
            raise ConfigError(f"{len(self.data.train)} training examples for {self.world.size} processes: each "
                              f"process needs at least one")
        # Rank 0 draws what one process draws; the other ranks' dropout masks come from streams of their own.
        torch.manual_seed(self.config.seed + self.world.rank * 1_000_003)
        self._place_model()
        self.cache = CacheSession(self.model, self.strategy, self.data, self.config, self.store,
                                  distributed=self.world.active, device=self.device, precision=self.precision,
                                  channels_last=self.channels_last, prepare=self._prepare,
                                  charge=self._count_cache_seconds)
        self.store = self.cache.store
        if self.config.head_init == "source":
            from transferlab.training.head_init import init_head_from_source

            init_head_from_source(self.model, self.eval_loader(self.data.train), self.device)
        resuming = resume and (self.ckpt_dir / LAST).is_file()
        self._start_target()
        self._start_strategy(resuming)
        trainable = self.strategy.ever_trainable(self.model, self.config.epochs)
        self.optimizer = build_optimizer(self.model, trainable, self.config,
                                         anchored=self.strategy.anchored_parameters(self.model),
                                         own=self.strategy.own_parameters())
        if resuming:
            distributed.barrier()  # rank 0 may have just removed a stale temporary file beside it
            self._restore(self.ckpt_dir / LAST)
        if self.world.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.state.world_size = self.world.size

    def _place_model(self) -> None:
        """The model on its device, in the run's precision and memory format."""
        self.precision = Precision(self.config.precision, self.device)
        self.channels_last = use_channels_last(self.config.memory_format, self.model)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.config.sync_bn:
            self._convert_sync_batchnorm()

    def _convert_sync_batchnorm(self) -> None:
        if self.device.type != "cuda":
            raise ConfigError("--sync-bn: torch's SyncBatchNorm runs on CUDA devices only; on the CPU each "
                              "process normalises with its own batch statistics (or use --bn-stats frozen)")
        if not self.world.active:
            logger.info("--sync-bn: one process, so BatchNorm statistics are already those of the whole batch")
            return
        # Frozen BatchNorm layers stay in eval mode (_train_mode), so their statistics are not synchronised.
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)

    def _start_target(self) -> None:
        """The target batches of a strategy that learns from unlabelled target data: a function of the global
        step (training/target.py), so the checkpoint's step is the loader's position."""
        if not getattr(self.strategy, "needs_target", False):
            return
        if self.target is None:
            raise ConfigError(f"{self.strategy.spec()} learns from unlabelled target data: pass --target-data PATH")
        if len(self.target.dataset) < self.world.size:
            raise ConfigError(f"--target-data {self.target.source}: {len(self.target.dataset)} example(s) for "
                              f"{self.world.size} processes: each process needs at least one")
        self.target_stream = TargetStream(self.target, self.global_batch_size, self.config.seed, self.world.rank,
                                          self.world.size, self._worker_options())

    def _start_strategy(self, resuming: bool) -> None:
        # Other ranks take rank 0's strategy state (EWC's Fisher is computed once, not once per rank), as a
        # resumed run takes its checkpoint's: on_fit_start is told that the state follows.
        follows = resuming or not self.world.is_main
        ctx = StrategyContext(total_epochs=self.config.epochs, train_batches=self._plain_train_batches,
                              device=self.device, options=self.strategy_options, resuming=follows,
                              seed=self.config.seed)
        self.strategy.on_fit_start(self.model, ctx)
        if not resuming:
            distributed.share_strategy_state(self.strategy, self.world)

    def _plain_train_batches(self):
        for batch in self.eval_loader(self.data.train):
            yield to_device(batch, self.device)

    def _restore(self, path: Path) -> None:
        model_state, opt_state, trainer_state, strategy_state, rng = load_checkpoint(path)
        try:  # a checkpoint of another model, strategy or version: one clear line, not a traceback
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(opt_state)
            self.strategy.load_state_dict(strategy_state)
            self.state = FitState(**trainer_state)
            # this rank's own CPU and CUDA generators (each rank's, in a distributed run)
            distributed.restore_rng_states(rng, self.world, self.device, trained_on=self.state.world_size)
            scaler = self.precision.scaler if self.precision is not None else None  # fp16's loss scale goes on
            if scaler is not None and self.state.scaler:
                scaler.load_state_dict(self.state.scaler)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise UnsafeFileError(f"{path}: does not fit this run, cannot resume from it: "
                                  f"{_first_reason(exc)}") from None
        if self.state.world_size != self.world.size:  # the same examples, in global batches of another size
            self.state.batch_in_epoch = distributed.batch_in_other_world(
                self.state.batch_in_epoch, self.config.batch_size, self.state.world_size, self.world)
        logger.info("resumed from %s at epoch %d", path, self.state.epoch + 1)

    # ---- train ---------------------------------------------------------------------------------
    def _run_epoch(self, epoch: int, total_steps: int) -> dict:
        """Train one epoch, evaluate on val: the epoch's history record."""
        trainable = self._configure_epoch(epoch)
        self.model.head.on_epoch_start(epoch, self.config.epochs)
        k = self.cache.groups(trainable)
        cached = self.cache.entry("train", k) if k else None  # before the modes are set: computing it runs in eval
        self._train_mode()
        sums, term_sums, seconds = self._train_epoch(epoch, total_steps, cached, k)
        val = self._evaluate("val", k)
        record = self._record(epoch, sums, term_sums, seconds, val, cached_groups=k if cached is not None else 0)
        logger.info("epoch %d/%d: train loss %.4f acc %s | val loss %.4f acc %s | %.1f samples/s",
                    epoch + 1, self.config.epochs, record["train_loss"], _fmt(record["train_accuracy"]),
                    val["loss"], _fmt(val["accuracy"]), record["samples_per_second"])
        return record

    def _configure_epoch(self, epoch: int) -> set[str] | None:
        trainable = self.strategy.trainable(self.model, epoch)
        for name, p in self.model.named_parameters():
            p.requires_grad_(trainable is None or name in trainable)
        set_group_base_lrs(self.optimizer, self.strategy.lr_scales(self.model, epoch), self.config.lr)
        if self.world.active:
            self.ddp.update(self.model, self.device, self.strategy)
        return trainable

    def _train_mode(self) -> None:
        """Train mode, except the modules of depth groups whose parameters are all frozen, which run in eval
        mode as a whole (dropout off: a linear probe fits its head on the deterministic features it is
        evaluated on), and BatchNorm layers whose parameters are all frozen: their running statistics
        stay as pre-trained. (A frozen layer whose BatchNorm keeps updating its statistics is not frozen:
        its outputs change. `freeze:train_bn=true` makes BN parameters trainable, and so lets them adapt.)
        A BatchNorm layer without parameters (`affine=False`) has none of its own to ask: it follows its
        depth group's (`batchnorm_trains`). With `bn_stats="frozen"` every BatchNorm layer stays in inference
        mode: its weights may train, but it normalises with the pre-trained running statistics, as in the
        fine-tuning recipe of the Keras transfer-learning guide for small target sets (small batches give noisy
        statistics, and a probed head keeps seeing the features it was fitted to).
        """
        self.model.train()
        grouped = self.model.grouped_parameters()
        for modules, params in zip(self.model.group_modules(), grouped):  # a frozen depth group runs as deployed
            if params and not any(p.requires_grad for _, p in params):
                for _, module in modules:
                    module.eval()
        if not any(p.requires_grad for p in self.model.backbone.parameters()):
            self.model.backbone.eval()  # also what the root module governs (timm's pre-logits dropout)
        keep_all = self.config.bn_stats == "frozen"
        for name, module in self.model.named_modules():
            if is_batchnorm(module) and (keep_all or not batchnorm_trains(self.model, name, module, grouped)):
                module.eval()

    def train_loader(self, epoch: int, start: int = 0, cached: dict | None = None, k: int = 0) -> DataLoader:
        """The epoch's batches; with `cached` (a frozen-prefix entry for k groups) the same batches as rows of it.

        The shuffle order depends on (seed, epoch) only, so a resumed epoch sees the same batches. The loader
        draws its base seed from `gen` before the sampler's permutation, as DataLoader(shuffle=True) does."""
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        sampler = EpochBatches(RandomSampler(self.data.train, generator=gen), self.global_batch_size,
                               self.config.seed, epoch, start=start, min_last=self.world.size)
        if self.world.active:
            sampler = RankRows(sampler, self.world.rank, self.world.size)
        if cached is not None:
            return cached_loader(cached, k, len(self.data.train), batch_sampler=sampler, generator=gen)
        return DataLoader(SeededItems(self.data.train), batch_sampler=sampler, generator=gen,
                          collate_fn=self.data.collate, **self._worker_options())

    @property
    def global_batch_size(self) -> int:
        """Examples per optimiser step: --batch-size on each of the world's processes."""
        return self.config.batch_size * self.world.size

    def _train_epoch(self, epoch: int, total_steps: int, cached: dict | None, k: int) -> tuple[dict, dict, float]:
        """The epoch's steps (from the batch a resumed run stopped at): its sums over all ranks and its seconds."""
        done = self.state.batch_in_epoch  # > 0 when resuming inside this epoch
        sums, term_sums, seconds_before = self._resumed_sums()
        start = time.perf_counter()
        progress = _progress(self.train_loader(epoch, start=done, cached=cached, k=k),
                             f"epoch {epoch + 1}/{self.config.epochs}")
        for position, batch in enumerate(progress, start=done):
            if batch["labels"].numel() > 0 or self.world.active:  # every rank takes part in every step
                self._train_step(batch, epoch, total_steps, sums, term_sums)
            self.state.batch_in_epoch = position + 1
            if self._checkpoint_due():
                self.state.epoch_sums = {**self._reduce(sums), "terms": self._reduce(term_sums),
                                         "seconds": seconds_before + time.perf_counter() - start}
                self._save_last()
            if hasattr(progress, "set_postfix") and sums["n"]:
                progress.set_postfix(loss=f"{sums['loss'] / sums['n']:.4f}")
        seconds = seconds_before + time.perf_counter() - start
        self.state.train_seconds += seconds
        self.state.batch_in_epoch, self.state.epoch_sums = 0, {}
        return self._reduce(sums), self._reduce(term_sums), seconds

    def _resumed_sums(self) -> tuple[dict, dict, float]:
        """The epoch's running sums so far (zero, unless resuming inside the epoch) and its seconds so far."""
        partial = self.state.epoch_sums or {}
        term_sums: dict[str, float] = dict(partial.get("terms", {}))
        if not self.world.is_main:  # rank 0's checkpoint holds the sums of all ranks so far
            return {"loss": 0.0, "correct": 0, "n": 0}, {name: 0.0 for name in term_sums}, partial.get("seconds", 0.0)
        sums = {"loss": partial.get("loss", 0.0), "correct": partial.get("correct", 0), "n": partial.get("n", 0)}
        return sums, term_sums, partial.get("seconds", 0.0)

    def _train_step(self, batch: dict, epoch: int, total_steps: int, sums: dict, term_sums: dict) -> None:
        """One optimiser step on this rank's rows of a global batch. A skipped step still counts as a step."""
        batch = self._prepare(batch)
        poison = faults.on_step(self.state.step + 1)  # test-only fault injection; no-op otherwise
        n = batch["labels"].numel()
        share = distributed.loss_share(n, self.world)  # this rank's loss weight (1.0 in one process)
        if share is None:  # a rank whose rows could all not be read: no rank can step without it
            logger.warning("step %d: a process had no readable example in its rows of the batch: step skipped "
                           "on every process", self.state.step + 1)
            self.state.step += 1
            return
        apply_schedule(self.optimizer, schedule_factor(self.state.step, total_steps, self.config, self._restarts))
        logits, task_loss, terms, loss = self._loss(batch, poison, progress=self.state.step / max(total_steps, 1))
        stepped = self._optimise(loss, share, epoch)
        self.state.step += 1
        if stepped:
            self._add_to_sums(sums, term_sums, logits, batch["labels"], task_loss, terms)

    def _loss(self, batch: dict, poison: bool, progress: float = 0.0):
        """Logits (B, C) and the task loss, the extra loss terms and their sum, in float32. `progress`: the share
        of the run's steps done (a domain adversary's schedule)."""
        with self.precision.autocast():
            logits = (self.ddp.module or self.model)(batch)
            terms = {**self.model.head.loss_terms(), **self.strategy.loss_terms(self.model, batch, logits)}
            if self.target_stream is not None:  # this step's unlabelled target batch (no labels in it)
                target = self._prepare(self.target_stream.batch(self.state.step))
                terms.update(self.strategy.target_loss_terms(self.model, batch, logits, target, progress))
        logits = logits.float()  # the loss and its terms in float32
        task_loss = self.objective.loss(logits, batch["labels"])
        terms = {name: term.float() for name, term in terms.items()}
        loss = task_loss + sum(terms.values()) if terms else task_loss
        if poison:
            loss = loss * float("nan")
        return logits, task_loss, terms, loss

    def _optimise(self, loss: torch.Tensor, share: float, epoch: int) -> bool:
        """Backward and the optimiser's step; False when the step was skipped (a non-finite loss or gradient)."""
        if not distributed.all_finite(bool(torch.isfinite(loss)), self.world):
            self._handle_nonfinite(loss, epoch)
            return False
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        weighted = loss * share if share != 1.0 else loss
        (scaler.scale(weighted) if scaler is not None else weighted).backward()
        own = [p for _, p in self.strategy.own_parameters()]  # a discriminator: outside DDP, averaged here
        distributed.average_gradients(own, self.world)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        # A finite loss can still give inf/NaN gradients; one such step would poison every weight.
        # (max_norm=inf only measures: the clip coefficient is clamped to exactly 1.)
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad] + own,
                                              self.config.grad_clip if self.config.grad_clip > 0 else math.inf)
        if scaler is not None and not torch.isfinite(norm):  # fp16 overflow: the scaler skips the step and backs off
            scaler.step(self.optimizer)
            scaler.update()
            return False
        if not torch.isfinite(norm):
            self._handle_nonfinite(norm, epoch, what="gradient norm")
            return False
        self._step_optimizer(epoch)
        return True

    def _step_optimizer(self, epoch: int) -> None:
        scaler = self.precision.scaler
        try:
            if scaler is not None:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise
            raise TrainingError(f"the optimiser step overflowed at step {self.state.step + 1} (epoch "
                                f"{epoch + 1}): the learning rate times its group's scale is too large for "
                                f"float32; {self._kept()} (lower --lr)") from None

    def _add_to_sums(self, sums: dict, term_sums: dict, logits, labels, task_loss, terms: dict) -> None:
        n = labels.numel()
        sums["loss"] += task_loss.item() * n
        correct = self.objective.correct(logits, labels)
        sums["correct"] = None if correct is None or sums["correct"] is None else sums["correct"] + correct
        sums["n"] += n
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + value.item() * n

    def _handle_nonfinite(self, value: torch.Tensor, epoch: int, what: str = "loss") -> None:
        where = f"step {self.state.step + 1} (epoch {epoch + 1})"
        if self.config.on_nonfinite == "skip":
            logger.warning("non-finite %s (%s) at %s: step skipped", what, value.item(), where)
            self.state.skipped_steps.append(self.state.step + 1)
            return
        raise TrainingError(f"{what} became {value.item()} at {where}; the run stopped, {self._kept()} "
                            f"(lower --lr, or --on-nonfinite skip)")

    def _record(self, epoch: int, sums: dict, term_sums: dict, seconds: float, val: dict,
                cached_groups: int) -> dict:
        """The epoch's line of history.jsonl."""
        n = max(sums["n"], 1)
        return {
            "epoch": epoch + 1,
            "train_loss": sums["loss"] / n,
            "train_accuracy": None if sums["correct"] is None else sums["correct"] / n,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "lr": group_lrs(self.optimizer),
            "seconds": seconds, "samples_per_second": sums["n"] / seconds if seconds > 0 else 0.0,
            "trainable_params": self.model.count_parameters()[0],
            "cached_groups": cached_groups,
            **{name: value / n for name, value in term_sums.items()},
        }

    def _prepare(self, batch: dict) -> dict:
        batch = to_device(batch, self.device)
        return to_channels_last(batch) if self.channels_last else batch

    def _worker_options(self) -> dict:
        workers = self.config.workers
        return {"num_workers": workers, "pin_memory": self.device.type == "cuda",
                "persistent_workers": False, **({"prefetch_factor": 2} if workers else {})}

    def _count_cache_seconds(self, seconds: float) -> None:
        self.state.cache_seconds += seconds

    def _reduce(self, sums: dict) -> dict:
        return distributed.reduce_sums(sums, self.world)

    # ---- evaluate ------------------------------------------------------------------------------
    def eval_loader(self, dataset) -> DataLoader:
        return ordered_loader(dataset, self.config.eval_batch_size, self.data.collate, **self._worker_options())

    def _evaluate(self, split: str, k: int = 0, correct: list | None = None) -> dict:
        """The objective on a split, from its frozen-prefix entry for k groups when there is one; `correct`
        collects this rank's per-example correctness (evaluate)."""
        loader = self.cache.eval_loader(split, k)
        if loader is None:
            loader = self.eval_loader(distributed.rank_block(getattr(self.data, split), self.world))
        return evaluate(self.model, loader, self.device, self.objective, prepare=self._prepare,
                        autocast=self.precision.autocast, reduce=self._reduce, correct=correct)

    # ---- checkpoint ----------------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        """A mid-epoch checkpoint every checkpoint_every_steps optimiser steps (the epoch's end writes its own)."""
        every = self.config.checkpoint_every_steps
        return every > 0 and self.state.step > 0 and self.state.step % every == 0 \
            and self.state.batch_in_epoch < self._batches_per_epoch

    def _track_best(self, record: dict) -> bool:
        acc, loss = record["val_accuracy"], record["val_loss"]
        if self.objective.improves(acc, loss, self.state.best_accuracy, self.state.best_loss):
            self.state.best_accuracy, self.state.best_loss = acc, loss
            self.state.best_epoch = record["epoch"]
            self.state.epochs_without_improvement = 0
            if self.world.is_main:
                save_weights(self.ckpt_dir / BEST, self.model)
        else:
            self.state.epochs_without_improvement += 1
        return self._should_stop()

    def _should_stop(self) -> bool:
        return 0 < self.config.patience <= self.state.epochs_without_improvement

    def _save_last(self) -> None:
        if self.precision.scaler is not None:
            self.state.scaler = dict(self.precision.scaler.state_dict())
        rng = distributed.rank_rng_states(self.world, self.device)  # every rank's dropout stream (CPU and CUDA)
        if self.world.is_main:
            save_checkpoint(self.ckpt_dir / LAST, self.model, self.optimizer, vars(self.state),
                            self.strategy.state_dict(), extra_rng=rng)

    def _write_history(self) -> None:
        import json

        if not self.world.is_main:
            return
        atomic_write_text(self.out_dir / "history.jsonl",
                          "".join(json.dumps(r) + "\n" for r in self.state.history))

    def _kept(self) -> str:
        last = self.ckpt_dir / LAST
        return (f"the last good checkpoint is {last} (continue with --resume)" if last.is_file()
                else "no checkpoint was written yet")

    # ---- finish --------------------------------------------------------------------------------
    def _finish(self) -> dict:
        """The selected (best) weights on val and test: the run's metrics, also handed to the callbacks."""
        from transferlab.safe_io import load_tensors

        distributed.barrier()  # rank 0 has written the best weights
        self.model.load_state_dict(load_tensors(self.ckpt_dir / BEST))
        k = self.cache.final_groups(self.state.history, self.state.best_epoch)
        examples: dict[str, torch.Tensor] = {}
        val = self._evaluate_final("val", k, examples)
        test = self._evaluate_final("test", k, examples) if self.data.test else None
        if examples and self.world.is_main:
            save_tensors(self.out_dir / EXAMPLES, examples)
        metrics = self._metrics(val, test)
        for cb in self._callbacks():
            cb.on_fit_end(self, metrics)
        return metrics

    def _evaluate_final(self, split: str, k: int, examples: dict) -> dict:
        """The selected weights on a split, keeping each example's correctness in `examples` (classification):
        `<split>.correct` (N,) uint8 and `<split>.labels` (N,) int64 in dataset order (the ranks' contiguous
        blocks joined in rank order; unreadable examples are absent, the same ones for every run of the data)."""
        parts: list[torch.Tensor] = []
        result = self._evaluate(split, k, correct=parts)
        if result.get("accuracy") is None:  # an objective without classes: nothing to compare per example
            return result
        mine = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
        examples[f"{split}.correct"] = distributed.gather_rows(mine, self.world).to(torch.uint8)
        dataset = getattr(self.data, split)
        labels = list(getattr(dataset, "targets", []))
        if len(labels) == examples[f"{split}.correct"].numel():
            examples[f"{split}.labels"] = torch.tensor(labels, dtype=torch.int64)
        return result

    def _metrics(self, val: dict, test: dict | None) -> dict:
        history = self.state.history
        trainable = self.strategy.ever_trainable(self.model, self.config.epochs)
        total = sum(p.numel() for p in self.model.parameters())
        n_trainable = sum(p.numel() for n, p in self.model.named_parameters()
                          if trainable is None or n in trainable)
        samples = sum(r["samples_per_second"] * r["seconds"] for r in history)
        return {
            "val": {"accuracy": val["accuracy"], "loss": val["loss"], "n": val["n"]},
            "test": {"accuracy": test["accuracy"], "loss": test["loss"], "n": test["n"]} if test else None,
            "trainable_params": n_trainable, "total_params": total, "trainable_share": n_trainable / total,
            "train_seconds": self.state.train_seconds, "epochs_run": len(history),
            "best_epoch": self.state.best_epoch,
            "final_train_accuracy": history[-1]["train_accuracy"] if history else float("nan"),
            "samples_per_second": samples / self.state.train_seconds if self.state.train_seconds else 0.0,
            "peak_memory_mb": peak_memory_mb(self.device), "skipped_steps": self.state.skipped_steps,
            "precision": self.config.precision, "cache_seconds": self.state.cache_seconds,
            "world_size": self.world.size, "global_batch_size": self.global_batch_size,
        }


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
