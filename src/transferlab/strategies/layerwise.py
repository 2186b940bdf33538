"""Selection and learning-rate strategies written against depth groups only."""
from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.errors import ConfigError
from transferlab.nn_utils import is_batchnorm
from transferlab.strategies.base import Strategy, Tunable, backbone_names, head_names, names_in_groups
from transferlab.strategies.registry import register_strategy


def _backbone_scales(model, backbone_lr: float) -> list[float]:
    """Head at the base learning rate, every backbone group at `backbone_lr` times it."""
    n = len(model.depth_groups)
    return [backbone_lr] * (n - 1) + [1.0]


# --tune: a backbone's rate relative to the head's, from a hundredth to the same rate
BACKBONE_LR_RANGE = Tunable(0.01, 1.0, log=True)
MAX_RATE_RATIO = 1e3  # a relative rate above this is a typo; with MAX_LR it keeps optimiser arithmetic finite


def _check_positive(name: str, value: float):
    if not 0 < value <= MAX_RATE_RATIO:
        raise ValueError(f"{name} must be > 0 and at most {MAX_RATE_RATIO:g} (a ratio of learning rates), "
                         f"got {value}")


@register_strategy
class Full(Strategy):
    defers_lr = True  # steps aside when an lr strategy (discriminative) is composed in
    name = "full"
    role = "selection"
    help = ("Everything trains. The backbone's learning rate is backbone_lr times the head's, so a random "
            "head's early gradients do not wreck pre-trained features (set backbone_lr=1 for one rate).")

    @dataclass
    class Params:
        backbone_lr: float = field(default=0.1, metadata={"help": "backbone learning rate / head learning rate"})

        def __post_init__(self):
            _check_positive("backbone_lr", self.backbone_lr)

    @classmethod
    def search_space(cls, ctx):
        return {"backbone_lr": BACKBONE_LR_RANGE}

    def lr_scales(self, model, epoch):
        return _backbone_scales(model, self.params.backbone_lr)



@register_strategy
class LinearProbe(Strategy):
    name = "linear_probe"
    role = "selection"
    help = "Only the new head trains; the backbone (and its BatchNorm statistics) stays as pre-trained."

    def trainable(self, model, epoch):
        return head_names(model)


@register_strategy
class Freeze(Strategy):
    defers_lr = True  # steps aside when an lr strategy (discriminative) is composed in
    name = "freeze"
    role = "selection"
    help = ("The first k depth groups are frozen (their BatchNorm statistics too, unless train_bn=true); "
            "the rest train, the backbone at backbone_lr times the head's learning rate.")

    @dataclass
    class Params:
        k: int = field(default=4, metadata={"help": "number of depth groups frozen, from the input side"})
        train_bn: bool = field(default=False, metadata={
            "help": "let BatchNorm layers in frozen groups train their affine parameters and statistics"})
        backbone_lr: float = field(default=0.1, metadata={"help": "backbone learning rate / head learning rate"})

        def __post_init__(self):
            if self.k < 0:
                raise ValueError(f"k must be >= 0, got {self.k}")
            _check_positive("backbone_lr", self.backbone_lr)

    @classmethod
    def search_space(cls, ctx):
        space = {"backbone_lr": BACKBONE_LR_RANGE}
        if ctx.depth_groups - 1 > 1:  # k from 1 (the stem frozen) to every backbone group (a linear probe)
            space["k"] = Tunable(1, ctx.depth_groups - 1)
        return space

    def trainable(self, model, epoch):
        n = len(model.depth_groups)
        if self.params.k >= n:
            raise ConfigError(f"freeze:k={self.params.k} would freeze the head too: this model has {n} depth "
                              f"groups (see `transferlab models --groups`), so k must be at most {n - 1}")
        names = names_in_groups(model, range(self.params.k, n))
        if self.params.train_bn:
            names |= _batchnorm_param_names(model)
        return names

    def lr_scales(self, model, epoch):
        return _backbone_scales(model, self.params.backbone_lr)



def _batchnorm_param_names(model) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        if is_batchnorm(module):
            names |= {f"{mod_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
    return names


@register_strategy
class GradualUnfreeze(Strategy):
    defers_lr = True  # steps aside when an lr strategy (discriminative) is composed in
    name = "gradual_unfreeze"
    role = "selection"
    help = ("ULMFiT (Howard & Ruder 2018): start with the head alone, unfreeze one more depth group from the "
            "top every `every` epochs.")

    @dataclass
    class Params:
        every: int = field(default=1, metadata={"help": "epochs between two unfreezing steps"})
        backbone_lr: float = field(default=0.1, metadata={"help": "backbone learning rate / head learning rate"})

        def __post_init__(self):
            if self.every < 1:
                raise ValueError(f"every must be >= 1, got {self.every}")
            _check_positive("backbone_lr", self.backbone_lr)

    @classmethod
    def search_space(cls, ctx):
        space = {"backbone_lr": BACKBONE_LR_RANGE}
        if ctx.epochs // 2 > 1:
            space["every"] = Tunable(1, ctx.epochs // 2)
        return space

    def unfrozen_groups(self, model, epoch: int) -> int:
        return min(len(model.depth_groups), 1 + epoch // self.params.every)

    def trainable(self, model, epoch):
        n = len(model.depth_groups)
        return names_in_groups(model, range(n - self.unfrozen_groups(model, epoch), n))

    def lr_scales(self, model, epoch):
        return _backbone_scales(model, self.params.backbone_lr)



@register_strategy
class LinearProbeThenFinetune(Strategy):
    name = "lp_ft"
    role = "selection"
    help = ("Kumar et al. 2022: train the head alone for lp_epochs (a linear probe), then everything, at "
            "ft_lr times the base learning rate, starting from the trained head. Each phase has a schedule of its "
            "own: the learning rate warms up over --warmup of the phase's steps and decays to the phase's end, "
            "so the freshly unfrozen backbone starts at a small, rising rate.")

    @dataclass
    class Params:
        lp_epochs: int = field(default=2, metadata={"help": "epochs of linear probing before fine-tuning"})
        ft_lr: float = field(default=0.1, metadata={
            "help": "learning rate of every group in the fine-tuning phase, relative to the base rate"})

        def __post_init__(self):
            if self.lp_epochs < 1:
                raise ValueError(f"lp_epochs must be >= 1, got {self.lp_epochs}")
            _check_positive("ft_lr", self.ft_lr)

    @classmethod
    def search_space(cls, ctx):
        space = {"ft_lr": Tunable(0.01, 1.0, log=True)}
        if ctx.epochs - 1 > 1:  # at least one epoch of each phase
            space["lp_epochs"] = Tunable(1, ctx.epochs - 1)
        elif ctx.epochs == 2:  # one epoch of each: the only setting that runs (the default, 2, leaves no fine-tuning)
            space["lp_epochs"] = Tunable(choices=(1,))
        return space

    def check_epochs(self, total_epochs: int) -> None:
        if total_epochs <= self.params.lp_epochs:
            from transferlab.errors import ConfigError

            raise ConfigError(f"lp_ft probes for lp_epochs={self.params.lp_epochs} epochs and fine-tunes after "
                              f"them: --epochs {total_epochs} leaves no fine-tuning epoch (use --epochs "
                              f"{self.params.lp_epochs + 1} or more, or linear_probe)")

    def in_probe_phase(self, epoch: int) -> bool:
        return epoch < self.params.lp_epochs

    def trainable(self, model, epoch):
        if self.in_probe_phase(epoch):
            return head_names(model)
        return head_names(model) | backbone_names(model)

    def lr_scales(self, model, epoch):
        n = len(model.depth_groups)
        return [1.0] * n if self.in_probe_phase(epoch) else [self.params.ft_lr] * n

    def schedule_restarts(self, total_epochs):
        # Kumar et al. (2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution")
        # fine-tune from the probed head as a training run of its own, so the fine-tuning phase does not inherit
        # the middle of one cosine over the whole run: it warms up, then decays to the run's end. The warm-up
        # matters most here: the backbone has just been unfrozen and AdamW's moments for it are empty, so its
        # first steps would move every weight by about the full learning rate (Adam's update is ~lr * sign(g)).
        return [self.params.lp_epochs]



@register_strategy
class Discriminative(Strategy):
    name = "discriminative"
    role = "lr"
    help = ("Discriminative learning rates (Howard & Ruder 2018): eta_l = eta_0 * decay^(L - l) for depth "
            "group l = 0..L; the head (l = L) gets the base rate eta_0.")

    @dataclass
    class Params:
        decay: float = field(default=0.5, metadata={"help": "ratio between the rates of two adjacent groups"})

        def __post_init__(self):
            if not 0 < self.decay <= 1:
                raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    @classmethod
    def search_space(cls, ctx):
        return {"decay": Tunable(0.1, 0.9)}

    def lr_scales(self, model, epoch):
        last = len(model.depth_groups) - 1
        return [self.params.decay ** (last - index) for index in range(last + 1)]
