"""BitFit (Ben Zaken et al. 2022): only the bias terms of the backbone, and the new head, train.

Convolutions followed by BatchNorm have no bias: there the BatchNorm shift (beta) is that layer's bias, and it
trains; the BatchNorm scale (gamma) stays frozen. A BatchNorm layer with a trainable shift runs in training
mode (the trainer's rule), so its running statistics adapt to the target data: the task module stores them.
"""
from __future__ import annotations

from transferlab.errors import ConfigError
from transferlab.strategies.peft_methods._base import PeftStrategy, plain_name
from transferlab.strategies.peft_methods._registry import register_method


@register_method
class BitFit(PeftStrategy):
    method = "bitfit"
    name = "bitfit"
    mergeable = True  # the trained biases already sit in the base's places
    help = ("BitFit (Ben Zaken et al. 2022): only biases train (for convolutions before BatchNorm, the "
            "BatchNorm shift), plus the new head. BatchNorm statistics adapt and are saved with the module.")

    def slot_parameter_names(self, model, slot):
        names = {n for n, _ in model.backbone.named_parameters() if n.rsplit(".", 1)[-1] == "bias"
                 and not model.is_new_param("backbone." + n)}
        if not names:
            raise ConfigError(f"bitfit: {model.cfg.name} has no bias or BatchNorm shift to train")
        return {"backbone." + n for n in names}

    def save_slot(self, model, slot, directory):
        params = dict(model.named_parameters())
        return {plain_name(n): params[n].detach() for n in self.slot_parameter_names(model, slot)}

    def load_slot(self, model, slot, directory, tensors):
        expected = {plain_name(n) for n in self.slot_parameter_names(model, slot)}
        saved = {k for k in tensors if k.startswith("backbone.") and k.rsplit(".", 1)[-1] == "bias"}
        if saved != expected:
            raise ConfigError(f"{directory}: BitFit biases do not fit the model (missing "
                              f"{sorted(expected - saved)[:3]}, unexpected {sorted(saved - expected)[:3]})")
        return {k: tensors[k] for k in expected}  # values for existing tensors: the caller applies them

    def merge_slot(self, model, slot):
        """Nothing to fold: the trained biases already sit where the base model's biases are."""

    def structure(self, model):
        return {"biases": len(self.slot_parameter_names(model, "default"))}
