"""Source models: a run turned into a `--weights` file whose head becomes the next run's source head.

Source data (a data set in the source classifier's label space) is read by `transferlab.data`
(`load_source_data`, `source_label_map`), which the strategies (EWC) use too.
"""
from __future__ import annotations

from pathlib import Path

from transferlab.data import load_source_data, source_label_map  # noqa: F401  (the diagnostics' own names)
from transferlab.errors import ConfigError


def export_source_weights(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Turn a finished run of a timm architecture into a weights file for `--weights`: its backbone plus
    its trained head under the architecture's classifier name, which then becomes the source head.

    `transferlab finetune --model ARCH --weights OUT ...` builds a model whose `source_head` is this run's
    head (classes in the run's order), e.g. digits 0-4 as the source task of a sequential experiment.
    A LoRA or BitFit run is merged into its base first (the file then has the plain architecture's names);
    an adapter run is refused: its adapters are layers the plain architecture does not have.
    """
    from transferlab.models.heads import linear_weights
    from transferlab.outputs import check_output_path
    from transferlab.runs import load_run_model
    from transferlab.safe_io import save_tensors

    out = check_output_path(out, "--out", {"--run": run_dir}, expect="file")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; choose another file or pass --overwrite")
    if out.exists() and out.suffix != ".safetensors":
        raise ConfigError(f"--out {out} exists and is not a .safetensors file; it is not replaced")
    config, model, strategy = load_run_model(run_dir)
    backbone = model.backbone
    if not hasattr(backbone, "reset_classifier"):
        raise ConfigError(f"{config.model} is not a timm architecture; only those accept --weights")
    _merge_peft(model, strategy)
    classifier = model.cfg.classifier or backbone.pretrained_cfg.get("classifier", "classifier")
    state = {k: v for k, v in backbone.state_dict().items()}
    weight, bias = linear_weights(model.head, "export-source (timm's classifier is one linear layer)")
    state[f"{classifier}.weight"] = weight.detach()
    state[f"{classifier}.bias"] = bias.detach()
    save_tensors(out, state, metadata={"format": "transferlab-source-weights-1", "source_run": str(run_dir),
                                      "classes": ",".join(config.classes or [])})
    return {"out": str(out), "arch": model.cfg.architecture or config.model, "classes": config.classes,
            "tensors": len(state)}


def _merge_peft(model, strategy) -> None:
    """Fold a LoRA / BitFit slot into the base weights (so the file loads with --weights); refuse adapters."""
    from transferlab.strategies.peft_methods import PeftStrategy
    from transferlab.strategies.peft_methods._base import DEFAULT_SLOT

    parts = getattr(strategy, "parts", [strategy])
    for part in parts:
        if isinstance(part, PeftStrategy):
            if not part.mergeable:
                raise ConfigError(f"export-source: a {part.method} run cannot become a plain weights file (its "
                                  f"adapters are extra layers); export its task module instead "
                                  f"(transferlab modules export)")
            part.merge_slot(model, DEFAULT_SLOT)
