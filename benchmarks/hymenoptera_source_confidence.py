"""What the ImageNet head says about hymenoptera (docs/contamination.md): hymenoptera's images come from ImageNet,
which is not here, so membership cannot be checked; the source head's accuracy and confidence on them are what can
be measured. Per split: top-1 accuracy over ImageNet's 1,000 classes on the ant (310) and bee (309) images, the mean
softmax probability of the true class, and the share of images where it exceeds 0.9.

    .venv/bin/python benchmarks/hymenoptera_source_confidence.py [--data DIR]   (default: $TRANSFERLAB_DATA/hymenoptera)
"""
from __future__ import annotations

import argparse
import json

import torch

import _data
from transferlab.data import DataOptions, load_data
from transferlab.models import create_model
from transferlab.training.evaluate import ordered_loader

IMAGENET = {"ants": 310, "bees": 309}


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="hymenoptera's folder (default: $TRANSFERLAB_DATA/hymenoptera, docs/data.md)")
    args = ap.parse_args()
    data = args.data or str(_data.dataset("hymenoptera", "--data"))
    model = create_model("efficientnet_lite0", 2).eval()
    bundle = load_data(data, model.cfg, DataOptions())
    to_source = torch.tensor([IMAGENET[c] for c in bundle.classes])
    out = {}
    for split, dataset in (("train", bundle.train), ("val", bundle.val)):
        probs, labels = [], []
        for batch in ordered_loader(dataset, 64, bundle.collate):
            probs.append(model.source_logits(batch).softmax(1))
            labels.append(to_source[batch["labels"]])
        p, y = torch.cat(probs), torch.cat(labels)
        true_p = p[torch.arange(len(y)), y]
        out[split] = {"n": len(y), "top1": float((p.argmax(1) == y).float().mean()),
                      "mean_true_class_probability": float(true_p.mean()),
                      "share_above_0.9": float((true_p > 0.9).float().mean())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
