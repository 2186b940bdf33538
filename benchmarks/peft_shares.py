"""Trainable share of every PEFT method per model: build, apply, count (no training).

    .venv/bin/python benchmarks/peft_shares.py            # prints a Markdown table (docs/peft.md)
"""
from __future__ import annotations

import sys

import torch

from transferlab.errors import ConfigError
from transferlab.models import create_model
from transferlab.strategies import parse_strategy

MODELS = ["efficientnet_lite0", "minilm_l6"]
SPECS = ["lora", "adapter", "bitfit", "peft:lora", "peft:lora:use_rslora=true", "peft:lora:use_dora=true",
         "peft:ia3", "peft:loha", "peft:lokr", "peft:oft", "peft:boft", "peft:hra", "peft:fourierft"]


def share(model_name: str, spec: str) -> str:
    torch.manual_seed(0)
    model = create_model(model_name, 2)
    try:
        strategy = parse_strategy(spec).parts[0]
        strategy.prepare_model(model)
    except ConfigError as exc:
        return "refused: " + str(exc).split(": ", 1)[-1][:60]
    params = dict(model.named_parameters())
    trained = sum(params[n].numel() for n in strategy.ever_trainable(model, 1))
    total = sum(p.numel() for p in params.values())
    targets = len(strategy.target_modules(model)) if hasattr(strategy, "target_modules") else "-"
    return f"{trained:,} / {total:,} ({100 * trained / total:.2f}%), {targets} layers"


def main() -> None:
    models = sys.argv[1:] or MODELS
    print("| spec | " + " | ".join(f"`{m}`" for m in models) + " |")
    print("|---|" + "---|" * len(models))
    for spec in SPECS:
        print(f"| `{spec}` | " + " | ".join(share(m, spec) for m in models) + " |")


if __name__ == "__main__":
    main()
