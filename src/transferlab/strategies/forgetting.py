"""Regularisers against forgetting the source task: EWC and Learning without Forgetting.

Both need the model's source classifier (`model.source_head`); models without one (minilm_l6, a timm name
without --weights) are refused with a ConfigError when the run is prepared.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from transferlab.errors import ConfigError
from transferlab.strategies.base import Strategy, Tunable
from transferlab.strategies.registry import register_strategy

logger = logging.getLogger(__name__)


def _require_source_head(model, strategy: str) -> None:
    if model.source_head is None:
        raise ConfigError(f"{strategy} needs the pre-trained model's source classifier, and {model.cfg.name!r} "
                          f"has none; use l2sp instead, or fine-tune a timm architecture from --weights that "
                          f"include a classifier")


@register_strategy
class EWC(Strategy):
    name = "ewc"
    role = "regularizer"
    help = ("Kirkpatrick et al. 2017: lam/2 * sum_i F_i (w_i - w0_i)^2 over the pre-trained weights, F the "
            "diagonal empirical Fisher of the source task: the mean over `samples` examples of squared "
            "per-example gradients of log p(y|x) under the source head, y the true source label (--source-data) "
            "or else the source head's own prediction on the target training inputs.")

    @dataclass
    class Params:
        lam: float = field(default=100.0, metadata={"help": "strength of the Fisher-weighted pull to w0"})
        samples: int = field(default=200, metadata={"help": "examples used to estimate the Fisher diagonal"})

        def __post_init__(self):
            if self.lam < 0:
                raise ValueError("lam must be >= 0")
            if self.samples < 1:
                raise ValueError("samples must be >= 1")

    @classmethod
    def search_space(cls, ctx):
        return {"lam": Tunable(1.0, 1e4, log=True)}

    def __init__(self, params=None):
        super().__init__(params)
        self.reference: dict[str, torch.Tensor] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.fisher_source = ""

    def prepare_model(self, model):
        _require_source_head(model, "ewc")

    def on_fit_start(self, model, ctx):
        _require_source_head(model, "ewc")
        self.reference = {n: p.detach().clone() for n, p in model.named_parameters() if not model.is_new_param(n)}
        if self.fisher or ctx.resuming:  # restored already, or restored from the checkpoint next
            return
        examples = _source_examples(model, ctx, self.params.samples)
        source = (ctx.options or {}).get("source_data")
        self.fisher_source = f"true labels of {source}" if source else "source-head predictions on target inputs"
        self.fisher = empirical_fisher(model, examples, list(self.reference))
        logger.info("ewc: Fisher diagonal from %d examples (%s)", len(examples), self.fisher_source)

    def anchored_parameters(self, model):
        return set(self.reference)

    def loss_terms(self, model, batch, logits):
        pull = logits.new_zeros(())
        for name, p in model.named_parameters():
            if p.requires_grad and name in self.fisher:
                pull = pull + (self.fisher[name].to(p.device) * (p - self.reference[name].to(p.device)).pow(2)).sum()
        return {"ewc": 0.5 * self.params.lam * pull}

    def state_dict(self):
        return {f"fisher.{k}": v for k, v in self.fisher.items()}

    def load_state_dict(self, state):
        fisher = {k[len("fisher."):]: v for k, v in state.items() if k.startswith("fisher.")}
        if not fisher and not self.fisher:
            raise ValueError("the checkpoint holds no EWC Fisher diagonal")
        if fisher:
            self.fisher = fisher


def _source_examples(model, ctx, limit: int) -> list[tuple[dict, int]]:
    """Up to `limit` (single-example batch, source label) pairs: true labels from ctx.options['source_data'],
    else the source head's argmax on the target training inputs."""
    from transferlab.nn_utils import to_device

    device = ctx.device
    source_path = (ctx.options or {}).get("source_data")
    out: list[tuple[dict, int]] = []
    if source_path:
        from torch.utils.data import DataLoader

        from transferlab.data import load_source_data, source_label_map

        # The target batches tell the image size the run uses (DataOptions are not in the context).
        first = next(iter(ctx.train_batches()), None) if ctx.train_batches else None
        size = int(first["pixel_values"].shape[-1]) if first is not None and "pixel_values" in first else None
        tokenizer = getattr(model, "tokenizer", None)
        data = load_source_data(source_path, model.cfg, image_size=size, tokenizer=tokenizer)
        label_map = source_label_map(list(data.classes), model.source_head.out_features,
                                     (ctx.options or {}).get("source_class_map"), model.cfg.source_classes)
        gen = torch.Generator().manual_seed(0)
        loader = DataLoader(data.train, batch_size=1, shuffle=True, generator=gen, collate_fn=data.collate)
        for batch in loader:
            if batch["labels"].numel() == 0:
                continue
            label = label_map[int(batch["labels"][0])]
            out.append((to_device(batch, device), label))
            if len(out) >= limit:
                break
        return out
    if ctx.train_batches is None:
        raise ConfigError("ewc: no training batches to estimate the Fisher information on")
    with torch.no_grad():
        was = model.training
        model.eval()
        for batch in ctx.train_batches():
            labels = model.source_logits(batch).argmax(-1)
            n = labels.numel()
            for i in range(n):
                single = {k: v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == (n,) else v
                          for k, v in batch.items()}
                out.append((single, int(labels[i])))
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        model.train(was)
    return out


def empirical_fisher(model, examples: list[tuple[dict, int]], names: list[str]) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean over examples of (d log p(y|x) / d w)^2, one backward per example,
    the model in eval mode (BatchNorm uses its running statistics, dropout is off)."""
    params = dict(model.named_parameters())
    chosen = [n for n in names if n in params]
    saved = {n: params[n].requires_grad for n in chosen}
    was = model.training
    model.eval()
    fisher = {n: torch.zeros_like(params[n]) for n in chosen}
    try:
        for n in chosen:
            params[n].requires_grad_(True)
        for batch, label in examples:
            log_p = F.log_softmax(model.source_logits(batch), dim=-1)[0, label]
            grads = torch.autograd.grad(log_p, [params[n] for n in chosen], allow_unused=True)
            for n, g in zip(chosen, grads):
                if g is not None:
                    fisher[n] += g.detach() ** 2
    finally:
        for n, flag in saved.items():
            params[n].requires_grad_(flag)
        model.train(was)
    count = max(len(examples), 1)
    return {n: f / count for n, f in fisher.items()}


@register_strategy
class LwF(Strategy):
    name = "lwf"
    role = "regularizer"
    reads_inputs = True  # the teacher runs on the batch's inputs
    help = ("Li & Hoiem 2016: alpha * T^2 * KL(teacher || student) between the original source head's "
            "softened outputs (a frozen copy of the pre-trained backbone + source head) and the fine-tuned "
            "backbone's, on the current target batch. Needs no source data.")

    @dataclass
    class Params:
        alpha: float = field(default=1.0, metadata={"help": "weight of the distillation loss"})
        temperature: float = field(default=2.0, metadata={"help": "softmax temperature T (Li & Hoiem use 2)"})

        def __post_init__(self):
            if self.alpha < 0:
                raise ValueError("alpha must be >= 0")
            if self.temperature <= 0:
                raise ValueError("temperature must be > 0")

    @classmethod
    def search_space(cls, ctx):
        return {"alpha": Tunable(0.1, 10.0, log=True), "temperature": Tunable(1.0, 4.0)}

    def __init__(self, params=None):
        super().__init__(params)
        self.teacher = None
        self._features: torch.Tensor | None = None
        self._handle = None

    def prepare_model(self, model):
        _require_source_head(model, "lwf")

    def on_fit_start(self, model, ctx):
        _require_source_head(model, "lwf")
        if self._handle is not None:
            self._handle.remove()
        # The teacher is the pre-trained model: on_fit_start runs before any checkpoint loads.
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        # The student's pooled features are the head's input: capture them from the main forward pass
        # instead of running the backbone a second time.
        self._handle = model.head.register_forward_pre_hook(self._capture)

    def _capture(self, module, inputs):
        self._features = inputs[0]

    def loss_terms(self, model, batch, logits):
        if self.teacher is None or self._features is None:
            return {}
        T = self.params.temperature
        with torch.no_grad():
            self.teacher.eval()
            target = F.softmax(self.teacher.source_logits(batch) / T, dim=-1)  # (B, S)
        head = model.source_head.to(self._features.device)
        student = F.log_softmax(head(self._features) / T, dim=-1)  # (B, S)
        self._features = None
        kl = F.kl_div(student, target, reduction="batchmean")
        return {"lwf": self.params.alpha * T * T * kl}
