"""The strategy contract: how a way of adapting a model plugs into the trainer.

A strategy has a *role*:
- "selection" decides which parameters train, per epoch (full, linear_probe, freeze, gradual_unfreeze, lp_ft,
  and the parameter-efficient methods, which may also add modules). At most one per composed spec.
- "lr" scales each depth group's learning rate (discriminative).
- "regularizer" adds loss terms (l2sp, ewc, lwf).
Every hook does nothing by default. Hooks must derive their decisions from the epoch number and their own
saved state only, so that a resumed run makes exactly the decisions the uninterrupted one made.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

if TYPE_CHECKING:
    from transferlab.models import TransferModel


@dataclass
class StrategyContext:
    """What `on_fit_start` may use: the data, the total epoch count, a batch iterator factory, and whether
    the run resumes (state a strategy saved with `state_dict` is then restored right after)."""

    total_epochs: int
    train_batches: Any = None  # callable returning an iterator of training batches on the device
    device: torch.device | str = "cpu"
    options: dict = dataclasses.field(default_factory=dict)  # e.g. {"source_data": path}
    resuming: bool = False  # a checkpoint's strategy state (load_state_dict) follows on_fit_start
    seed: int = 0  # the run's --seed: what a strategy's own modules (a domain discriminator) start from


@dataclass(frozen=True)
class Tunable:
    """One parameter's range for `compare --tune` / `finetune --tune`: `low`..`high` (ints: an integer range;
    `log`: sampled log-uniformly), or `choices`. Declarative, so strategies need not import the tuning engine."""

    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple | None = None

    def __post_init__(self):
        if self.choices is not None:
            if not self.choices:
                raise ValueError("a Tunable's choices must not be empty")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a Tunable needs low < high (or choices), got {self.low!r}..{self.high!r}")
        elif self.log and not self.low > 0:
            raise ValueError(f"a log-uniform range needs low > 0, got {self.low!r}")

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int) \
            and not isinstance(self.low, bool)

    def text(self) -> str:
        if self.choices is not None:
            return "|".join(map(_fmt, self.choices))
        return f"{self.low:g}..{self.high:g}" + (":log" if self.log else "")


@dataclass(frozen=True)
class SpaceContext:
    """What a search space may depend on: the model's depth groups (head included) and the run's epochs."""

    depth_groups: int
    epochs: int


class Strategy:
    """Base class; subclasses declare `name`, `role`, `help` and a `Params` dataclass."""

    name: ClassVar[str] = ""
    role: ClassVar[str] = "selection"
    help: ClassVar[str] = ""
    # True when loss_terms reads the batch's inputs (LwF runs its teacher on them): the trainer's frozen-prefix
    # cache, whose batches hold what the frozen groups computed instead of the inputs, then stays off.
    reads_inputs: ClassVar[bool] = False
    # True when the strategy learns from unlabelled target data (--target-data): the trainer then draws one
    # target batch beside each training batch and hands it to `target_loss_terms` (strategies/domain/).
    needs_target: ClassVar[bool] = False

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    # ---- spec --------------------------------------------------------------------------------
    def spec(self) -> str:
        """The canonical spec string: name plus every non-default parameter."""
        defaults = self.Params()
        changed = [f"{f.name}={_fmt(getattr(self.params, f.name))}" for f in dataclasses.fields(self.params)
                   if getattr(self.params, f.name) != getattr(defaults, f.name)]
        return self.name + (":" + ",".join(changed) if changed else "")

    @classmethod
    def search_space(cls, ctx: SpaceContext) -> dict[str, Tunable]:
        """The strategy's own parameters that `--tune` searches, by `Params` field name (the learning rate and
        weight decay are searched for every strategy by the tuner itself). Default: none."""
        return {}

    # ---- hooks (all optional) ----------------------------------------------------------------
    def check_epochs(self, total_epochs: int) -> None:
        """Raise ConfigError when the strategy cannot do what it says in `total_epochs` epochs."""

    def prepare_model(self, model: "TransferModel") -> None:
        """Change the model's structure (add LoRA or adapter modules). Called before checkpoints load."""

    def check_training(self, model: "TransferModel", batch: Callable[[], dict | None], channels_last: bool) -> None:
        """Raise ConfigError when the prepared model cannot train with this strategy (peft layers that fail in a
        training step on this model), before the run folder is written. `batch()`: the first two training
        examples (None: none readable); `channels_last`: the run's image layout. Must leave no trace: weights,
        statistics, gradients, the random stream."""

    def on_fit_start(self, model: "TransferModel", ctx: StrategyContext) -> None:
        """Snapshot what the strategy needs (pre-trained weights, teacher outputs, Fisher information)."""

    def trainable(self, model: "TransferModel", epoch: int) -> set[str] | None:
        """Names of the parameters that train in this epoch; None means 'no opinion' (everything)."""
        return None

    def ever_trainable(self, model: "TransferModel", total_epochs: int) -> set[str] | None:
        """Parameters that train in some epoch (they go into the optimiser once, at the start)."""
        names: set[str] = set()
        for epoch in range(max(total_epochs, 1)):
            chosen = self.trainable(model, epoch)
            if chosen is None:
                return None
            names |= chosen
        return names

    def anchored_parameters(self, model: "TransferModel") -> set[str]:
        """Parameters the strategy pulls towards a reference value (L2-SP's and EWC's w0): the optimiser
        gives them no decoupled weight decay towards 0, or they would be pulled to w0 and to 0 at once."""
        return set()

    def lr_scales(self, model: "TransferModel", epoch: int) -> list[float] | None:
        """Per depth group multiplier of the base learning rate; None means all 1."""
        return None

    def schedule_restarts(self, total_epochs: int) -> list[int]:
        """Epochs at whose start the learning-rate schedule restarts: the phase from there to the next restart
        (or the run's end) gets a warm-up and decay of its own, as a run of its own would. [] (the default): one
        schedule over the whole run. A function of the spec and `total_epochs` only, so --resume is exact."""
        return []


    def loss_terms(self, model: "TransferModel", batch: dict, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra loss terms added to the cross-entropy, by name (logged per epoch)."""
        return {}

    def target_loss_terms(self, model: "TransferModel", batch: dict, logits: torch.Tensor, target: dict,
                          progress: float) -> dict[str, torch.Tensor]:
        """Extra loss terms that also read an unlabelled target batch (`needs_target`): `target` holds inputs
        only (no "labels"), `progress` is the share of the run's optimiser steps done, in [0, 1)."""
        return {}

    def own_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Parameters the strategy trains that are not the model's (a domain discriminator), by name: the
        optimiser holds them beside the model's, with the head's learning rate; they are checkpointed through
        `state_dict` and never saved with the model's weights. Exist from `on_fit_start` on."""
        return []

    def save_task_module(self, model: "TransferModel", out_dir) -> dict | None:
        """After training: write the strategy's small task module (PEFT) under `out_dir`.

        Returns facts for metrics.json (e.g. {"task_module": path, "task_module_bytes": n}) or None.
        """
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint (e.g. the Fisher diagonal); plain settings live in the spec."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def names_in_groups(model: "TransferModel", groups: range | list[int]) -> set[str]:
    wanted = set(groups)
    return {n for i, params in enumerate(model.grouped_parameters()) if i in wanted for n, _ in params}


def head_names(model: "TransferModel") -> set[str]:
    return names_in_groups(model, [len(model.depth_groups) - 1])


def backbone_names(model: "TransferModel") -> set[str]:
    return {n for n, _ in model.named_parameters()} - head_names(model)
