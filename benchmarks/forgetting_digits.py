"""Sequential tasks on scikit-learn's digits: forgetting of the source task under full fine-tuning, and
how much `lwf` and `ewc` keep of it.

1. source task: `test_efficientnet` (timm, random init) trained on digits 0-4 at 32 px;
2. its backbone + head exported as a --weights file: the head becomes the source head;
3. target task: digits 5-9, fine-tuned from those weights with each strategy;
4. `diagnose forgetting --source-data digits:0-4`: source-task accuracy (held-out 0-4 validation split)
   before and after, and the target validation accuracy.

    nice -n 10 .venv/bin/python benchmarks/forgetting_digits.py --out /tmp/forgetting_digits

Prints a Markdown table and writes OUT/results.json. About 10 minutes on 2 busy CPU cores.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from transferlab.data import DataOptions
from transferlab.diagnostics.forgetting import forgetting_for_run
from transferlab.diagnostics.source import export_source_weights
from transferlab.runs import RunConfig, finetune
from transferlab.strategies import parse_strategy
from transferlab.training.config import TrainConfig

# full's default backbone rate is 0.1x the head's; backbone_lr=1 (one rate, as usual in continual learning)
# forgets more. ewc's lam: under full fine-tuning sum_i F_i (w_i - w0_i)^2 is ~5e-4 here, so lam ~1e3 makes
# the penalty comparable to the cross-entropy.
STRATEGIES = ["full", "lwf", "full:backbone_lr=1", "full:backbone_lr=1+lwf", "full:backbone_lr=1+ewc:lam=3000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/forgetting_digits")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    options = DataOptions(image_size=args.image_size)
    train = TrainConfig(epochs=args.epochs, lr=args.lr, device="cpu")

    source_run = out / "source_0-4"
    if not (source_run / "metrics.json").is_file():
        finetune(RunConfig(model="test_efficientnet", data="digits:0-4", strategy="full", train=train,
                           data_options=options), source_run, overwrite=True)
    weights = out / "source_0-4.safetensors"
    export_source_weights(source_run, weights, overwrite=True)

    rows = []
    for spec in args.strategies:
        run = out / ("target_5-9_" + spec.replace(":", "_").replace("=", "").replace(",", "_").replace("+", "_"))
        if (run / "metrics.json").is_file() and json.loads((run / "metrics.json").read_text())["strategy"] == \
                parse_strategy(spec).spec():  # finished before: reuse
            metrics = json.loads((run / "metrics.json").read_text())
        else:
            metrics = finetune(RunConfig(model="test_efficientnet", data="digits:5-9", strategy=spec,
                                         weights=str(weights), train=train, data_options=options,
                                         strategy_options={"source_data": "digits:0-4"}), run, overwrite=True)
        seconds = metrics["train_seconds"]
        f = forgetting_for_run(run, source_data="digits:0-4")
        rows.append({"strategy": spec, "target_val_accuracy": metrics["val"]["accuracy"],
                     "source_accuracy_before": f.accuracy_before, "source_accuracy_after": f.accuracy_after,
                     "forgetting": f.forgetting, "train_seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)

    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| strategy | target val acc (5-9) | source acc before (0-4) | after | forgetting |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['strategy']}` | {r['target_val_accuracy']:.3f} | {r['source_accuracy_before']:.3f} | "
              f"{r['source_accuracy_after']:.3f} | {r['forgetting']:+.3f} |")


if __name__ == "__main__":
    main()
