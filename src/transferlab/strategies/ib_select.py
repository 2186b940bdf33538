"""A selective penalty on latent dimensions: fine-tuning as selection from what pre-training compressed.

The information-bottleneck view of transfer (Tishby et al. 2000; Achille & Soatto 2018): pre-training maps the
input to a representation Z, and fine-tuning should select from Z what predicts the new labels. So the
dimensions of Z that carry target information may move freely, and the others, which the target does not need
but the source task may, are held at their pre-trained values:

    penalty = lam * mean_b mean_d (1 - r_d) * (z_d - z0_d)^2 / s_d^2

z: the fine-tuned model's representation of the batch (the pooled features, or a depth group's pooled output),
z0: the pre-trained model's representation of the same batch, s_d^2: the pre-trained representation's variance
of dimension d on the training data, with BatchNorm on batch statistics as the penalty computes z0 (the penalty
is on standardised coordinates, so one `lam` means the same on models whose features have different scales),
r_d in [0, 1]: the relevance of dimension d to the target.

Relevance estimator (written here; no library provides it): the correlation ratio eta^2_d = SS_between(d) /
SS_total(d) of the pre-trained representation on up to `samples` training examples, the fraction of dimension
d's variance the target label explains (one-way ANOVA; the R^2 of predicting z_d from the class), divided by its
largest value over d, so the most relevant dimension moves without penalty and a dimension that does not vary
with the label is held with the full weight.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch

from transferlab.errors import ConfigError
from transferlab.nn_utils import is_batchnorm, pool_output
from transferlab.strategies.base import Strategy, Tunable
from transferlab.strategies.registry import register_strategy

logger = logging.getLogger(__name__)

FEATURES = -1  # `layer=-1`: the pooled features, the head's input


def correlation_ratio(z: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(eta^2 (D,), variance (D,)) of representations z (N, D) grouped by integer labels (N,): eta^2_d =
    sum_c n_c (mean_c,d - mean_d)^2 / sum_n (z_n,d - mean_d)^2, 0 for a constant dimension; the variance is the
    population variance SS_total / N. Computed in float64."""
    z = z.double()
    n = z.shape[0]
    mean = z.mean(0)  # (D,)
    ss_total = (z - mean).pow(2).sum(0)  # (D,)
    counts = torch.bincount(labels, minlength=num_classes).double()  # (C,)
    sums = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, labels, z)
    present = counts > 0
    class_means = sums[present] / counts[present, None]  # (C', D)
    ss_between = (counts[present, None] * (class_means - mean).pow(2)).sum(0)  # (D,)
    eta2 = torch.where(ss_total > 0, ss_between / ss_total.clamp(min=1e-300), torch.zeros_like(ss_total))
    return eta2.clamp(0.0, 1.0), ss_total / max(n, 1)


def relevance_from_eta2(eta2: torch.Tensor) -> torch.Tensor:
    """r_d = eta^2_d / max_d eta^2_d in [0, 1] (all 0 when no dimension varies with the label)."""
    top = eta2.max()
    return eta2 / top if top > 0 else torch.zeros_like(eta2)


def selective_penalty(z: torch.Tensor, z0: torch.Tensor, relevance: torch.Tensor,
                      variance: torch.Tensor) -> torch.Tensor:
    """mean_b mean_d (1 - r_d) (z_bd - z0_bd)^2 / s_d^2 for z, z0 (B, D) and r, s^2 (D,): a scalar."""
    weight = (1.0 - relevance) / variance
    return ((z - z0).pow(2) * weight).mean()


@register_strategy
class IBSelect(Strategy):
    name = "ib_select"
    role = "regularizer"
    reads_inputs = True  # the pre-trained copy runs on the batch's inputs
    help = ("Selection from the pre-trained representation (information-bottleneck view): lam * mean_d "
            "(1 - r_d) (z_d - z0_d)^2 / s_d^2 between the fine-tuned and the pre-trained representation of each "
            "batch (standardised by the pre-trained variance s_d^2); r_d = eta^2_d / max eta^2, eta^2 the "
            "fraction of dimension d's variance explained by the target label on the training data. Relevant "
            "dimensions move freely, the others are held.")

    @dataclass
    class Params:
        lam: float = field(default=1.0, metadata={"help": "strength of the pull on irrelevant dimensions"})
        layer: int = field(default=FEATURES, metadata={
            "help": "representation: -1 the pooled features (head input), k >= 0 depth group k's pooled output"})
        samples: int = field(default=2000, metadata={"help": "training examples used to estimate relevance"})

        def __post_init__(self):
            if not self.lam >= 0:
                raise ValueError("lam must be >= 0")
            if self.layer < FEATURES:
                raise ValueError("layer must be -1 (the pooled features) or a depth group index >= 0")
            if self.samples < 2:
                raise ValueError("samples must be >= 2")

    @classmethod
    def search_space(cls, ctx):
        return {"lam": Tunable(0.01, 10.0, log=True)}

    def __init__(self, params=None):
        super().__init__(params)
        self.reference = None
        self.relevance: torch.Tensor | None = None  # (D,) r_d
        self.variance: torch.Tensor | None = None  # (D,) s_d^2, floored
        self._student: object = None  # the student's representation from the main forward pass
        self._handle = None
        self._module_path = ""  # layer >= 0: the module whose output is the group's (set in on_fit_start)
        self._batchnorms: list = []

    # ---- setup ---------------------------------------------------------------------------------
    def _check_layer(self, model) -> None:
        if self.params.layer >= model.num_backbone_groups:
            raise ConfigError(f"ib_select: layer={self.params.layer} is not a backbone depth group of "
                              f"{model.cfg.name} (0..{model.num_backbone_groups - 1}, or -1 for the pooled features)")

    def prepare_model(self, model):
        self._check_layer(model)

    def on_fit_start(self, model, ctx):
        self._check_layer(model)
        if self._handle is not None:
            self._handle.remove()
        # on_fit_start runs on the pre-trained model, before any checkpoint loads: this copy is z0's model.
        self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        # (student, reference) BatchNorm pairs, found once: the copy has the model's structure, module for module
        self._batchnorms = [(mine, ref) for mine, ref in zip(model.modules(), self.reference.modules())
                            if is_batchnorm(ref)]
        for _, ref in self._batchnorms:
            ref.momentum = 0.0  # batch statistics when mirrored into train mode, running ones never move
        if self.params.layer == FEATURES:
            self._handle = model.head.register_forward_pre_hook(self._capture_input)
        else:
            # The group's output is that of its last top-level module (the module that runs last in the group).
            self._module_path = model.group_modules()[self.params.layer][-1][0]
            self._handle = model.get_submodule(self._module_path).register_forward_hook(self._capture_output)
        if self.relevance is not None or ctx.resuming:  # restored already, or from the checkpoint next
            return
        if ctx.train_batches is None:
            raise ConfigError("ib_select: no training batches to estimate the relevance of latent dimensions on")
        self._estimate(model.num_classes, ctx.train_batches)

    @torch.no_grad()
    def _estimate(self, num_classes: int, train_batches) -> None:
        # Measured with the reference's BatchNorm layers on batch statistics: the mode the penalty computes z0
        # in while the fine-tuned model re-estimates its statistics (`_mirror_batchnorm`; the default under
        # bn_stats=auto wherever BatchNorm trains). s_d^2 standardises differences of that z0, so it must be the
        # variance of that z0: on target data far from the source, running statistics give features of another
        # scale than batch statistics, and a variance measured in eval mode would weigh the penalty's dimensions
        # by the wrong amounts. (Eval mode in the penalty instead would count the gap between batch and running
        # statistics as drift before any weight moved.) Where the fine-tuned model keeps a layer's running
        # statistics (a frozen group, bn_stats=frozen) the penalty's reference does too; the strategy does not
        # see the trainer's BatchNorm policy at fit start, so the estimate takes the mode of the layers that
        # train. A batch of one example is skipped: its batch statistics say nothing of the spread between
        # examples.
        zs, labels, seen = [], [], 0
        for batch in train_batches():
            if batch["labels"].numel() < (2 if self._batchnorms else 1):
                continue
            zs.append(self.reference_representation(batch, batch_statistics=True).float().cpu())
            labels.append(batch["labels"].cpu())
            seen += batch["labels"].numel()
            if seen >= self.params.samples:
                break
        if seen < 2:
            raise ConfigError("ib_select: fewer than 2 training examples to estimate relevance on")
        z, y = torch.cat(zs)[:self.params.samples], torch.cat(labels)[:self.params.samples]
        eta2, variance = correlation_ratio(z, y, num_classes)
        self.relevance = relevance_from_eta2(eta2).float()
        # A dimension the pre-trained model holds constant would divide by 0: floor at 1e-6 of the mean variance.
        self.variance = variance.clamp(min=1e-6 * float(variance.mean()) + 1e-12).float()
        logger.info("ib_select: relevance of %d dimensions from %d training examples (median r %.3f, %d with r > "
                    "0.5)", len(self.relevance), len(y), float(self.relevance.median()),
                    int((self.relevance > 0.5).sum()))

    # ---- the representations -------------------------------------------------------------------------
    def _capture_input(self, module, inputs):
        self._student = inputs[0]

    def _capture_output(self, module, inputs, output):
        self._student = output

    def reference_representation(self, batch: dict, mirror: bool = False,
                                 batch_statistics: bool = False) -> torch.Tensor:
        """z0 (B, D): the pre-trained model's representation of the batch, in eval mode, or (`mirror`) with its
        BatchNorm layers in the modes of the fine-tuned model's, or (`batch_statistics`) with every BatchNorm
        layer on the batch's statistics. Dropout stays off; running statistics never move (momentum 0)."""
        self.reference.eval()
        if mirror:
            self._mirror_batchnorm()
        elif batch_statistics:
            for _, reference in self._batchnorms:
                reference.train()
        if self.params.layer == FEATURES:
            return self.reference.features(batch)
        from transferlab.models.transfer_model import run_until_module

        output = run_until_module(self.reference, self._module_path, lambda: self.reference(batch))
        return pool_output(output, batch.get("attention_mask"))

    def _mirror_batchnorm(self) -> None:
        """Put each BatchNorm of the reference in the mode of the student's (batch statistics where the student
        trains its own): otherwise the gap between batch and running statistics on target data would be
        penalised as drift before any weight moved. Dropout stays off in the reference."""
        for student, reference in self._batchnorms:
            reference.train(student.training)

    def loss_terms(self, model, batch, logits):
        if self.reference is None or self._student is None or self.relevance is None:
            return {}
        student, self._student = self._student, None
        z = student if self.params.layer == FEATURES else pool_output(student, batch.get("attention_mask"))
        with torch.no_grad():
            z0 = self.reference_representation(batch, mirror=True)
        penalty = selective_penalty(z.float(), z0.float(), self.relevance.to(z.device), self.variance.to(z.device))
        return {"ib_select": self.params.lam * penalty}

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self):
        if self.relevance is None:
            return {}
        return {"relevance": self.relevance, "variance": self.variance}

    def load_state_dict(self, state):
        if "relevance" not in state and self.relevance is None:
            raise ValueError("the checkpoint holds no ib_select relevance")
        if "relevance" in state:
            self.relevance, self.variance = state["relevance"], state["variance"]
