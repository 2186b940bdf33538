"""Forgetting of the source task (Avalanche's definition: accuracy before minus accuracy after).

With labelled source data: source-task accuracy of the original model (pre-trained backbone + source head)
and of the fine-tuned backbone with the same, original source head (`model.source_logits`).
Without: a proxy, the share of target inputs on which the two models' source heads predict the same class
(1.0 means the fine-tuned backbone still drives the source head as before; it says nothing about accuracy).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from transferlab.diagnostics._common import first_finished_runs, make_loader, pretrained_key, reference_model, split_of
from transferlab.sections import Bullets, Section, Table, Text
from transferlab.diagnostics.registry import arg, register_diagnostic, section
from transferlab.diagnostics.source import load_source_data, source_label_map
from transferlab.errors import ConfigError


@dataclass
class ForgettingResult:
    run: str
    mode: str  # "source_accuracy" or "agreement_proxy"
    data: str  # the source data, or the target data for the proxy
    split: str
    examples: int
    accuracy_before: float | None = None  # original model on the source task (full source label space)
    accuracy_after: float | None = None  # fine-tuned backbone + original source head
    forgetting: float | None = None  # accuracy_before - accuracy_after
    restricted_accuracy_before: float | None = None  # argmax over the source classes present in the data only
    restricted_accuracy_after: float | None = None
    agreement: float | None = None  # share of inputs with the same source-head prediction (both modes)
    source_classes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def source_predictions(model, loader, device, present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per example, in loader order: the source head's class over all source classes (`all`), over the
    source classes in `present` only (`restricted`, when given), and the data label (`labels`)."""
    from transferlab.training.evaluate import to_device

    model.eval()
    out: dict[str, list] = {"all": [], "restricted": [], "labels": []}
    for batch in loader:
        if batch["labels"].numel() == 0:
            continue
        batch = to_device(batch, device)
        logits = model.source_logits(batch)  # (B, S)
        out["all"].append(logits.argmax(-1).cpu())
        out["labels"].append(batch["labels"].cpu())
        if present is not None:
            index = present.to(logits.device)
            out["restricted"].append(index[logits[:, index].argmax(-1)].cpu())
    return {k: torch.cat(v) if v else torch.empty(0, dtype=torch.long) for k, v in out.items()}


def compare_predictions(before: dict, after: dict, mapping: torch.Tensor | None = None) -> dict:
    """Agreement of two models' source-head predictions and, with `mapping` (data label -> source class),
    the accuracy of each."""
    n = after["all"].numel()
    if n == 0:
        raise ConfigError("no readable examples to compare the source heads on")
    out = {"examples": n, "agreement": (before["all"] == after["all"]).sum().item() / n}
    if mapping is not None:
        y = mapping[after["labels"]]
        out.update(accuracy_before=(before["all"] == y).sum().item() / n,
                   accuracy_after=(after["all"] == y).sum().item() / n,
                   restricted_accuracy_before=(before["restricted"] == y).sum().item() / n,
                   restricted_accuracy_after=(after["restricted"] == y).sum().item() / n)
    return out


def forgetting_for_run(run_dir: str | Path, source_data: str | None = None, split: str = "val",
                       class_map: dict[str, int] | None = None, batch_size: int | None = None,
                       cache: dict | None = None) -> ForgettingResult:
    """Forgetting of a run's source task (with `source_data`) or the agreement proxy on its target data.

    `cache` (e.g. a comparison report's): the pre-trained model's predictions are kept there and reused by
    every run of the same model, weights and data, which would otherwise compute them again each time.
    """
    from transferlab.runs import _tokenizer_for, load_run, load_run_model
    from transferlab.training.trainer import resolve_device

    if source_data is not None:  # the target data is not read: only the source task is scored
        config, model, _ = load_run_model(run_dir)
        bundle = None
    else:
        config, bundle, model, _ = load_run(run_dir)
    if model.source_head is None:
        raise ConfigError(f"{config.model} has no source classifier (source head), so forgetting of a source "
                          f"task cannot be measured; fine-tune from --weights that include a classifier")
    device = resolve_device(config.train.device, fallback=True)
    model.to(device)
    bs = batch_size or config.train.eval_batch_size
    label_map, data = None, bundle
    if source_data is not None:
        # read once per report: every run of one model and data options reads the same source examples
        c = model.cfg  # what reading the source data depends on (not the weights)
        data_key = ("source_data", source_data, c.modality, c.input_size, c.mean, c.std, c.interpolation,
                    c.crop_pct, c.source_classes, c.max_length, config.model if c.modality == "text" else None,
                    config.data_options.image_size,
                    config.data_options.seed, config.data_options.val_fraction)
        data = cache.get(data_key) if cache is not None else None
        if data is None:
            tokenizer = _tokenizer_for(config.model) if model.cfg.modality == "text" else None
            data = load_source_data(source_data, model.cfg, image_size=config.data_options.image_size,
                                    seed=config.data_options.seed, val_fraction=config.data_options.val_fraction,
                                    tokenizer=tokenizer)
            if cache is not None:
                cache[data_key] = data
        label_map = source_label_map(list(data.classes), model.source_head.out_features, class_map,
                                     model.cfg.source_classes)
    mapping = torch.tensor(label_map) if label_map is not None else None
    present = mapping.unique() if mapping is not None else None
    loader = make_loader(data, split_of(data, split), bs)
    # The pre-trained model (source heads need --weights, so it is never a random draw) on the same examples.
    key = pretrained_key("forgetting", config, source_data or config.data, split, bs, tuple(label_map or ()))
    before = cache.get(key) if cache is not None else None
    if before is None:
        before = source_predictions(reference_model(config).to(device), loader, device, present)
        if cache is not None:
            cache[key] = before
    stats = compare_predictions(before, source_predictions(model, loader, device, present), mapping)
    if source_data is None:
        return ForgettingResult(run=str(run_dir), mode="agreement_proxy", data=config.data, split=split,
                                examples=stats["examples"], agreement=stats["agreement"])
    return ForgettingResult(run=str(run_dir), mode="source_accuracy", data=source_data, split=split,
                            examples=stats["examples"], accuracy_before=stats["accuracy_before"],
                            accuracy_after=stats["accuracy_after"],
                            forgetting=stats["accuracy_before"] - stats["accuracy_after"],
                            restricted_accuracy_before=stats["restricted_accuracy_before"],
                            restricted_accuracy_after=stats["restricted_accuracy_after"],
                            agreement=stats["agreement"], source_classes=label_map)


# ---- the command and the report section (transferlab.diagnostics.registry) ---------------------------------
def forgetting_section(ctx) -> Section | None:
    rows, data, notes = [], {}, []
    for name, run_dir in first_finished_runs(ctx, "forgetting"):
        source = _source_data(run_dir) or ctx.source_data
        try:
            f = forgetting_for_run(run_dir, source_data=source, cache=ctx.cache)
        except Exception as exc:  # noqa: BLE001  (e.g. no source head: scratch, minilm_l6)
            notes.append(f"{name}: not measurable ({exc})")
            continue
        data[name] = f.to_dict()
        if f.mode == "source_accuracy":
            rows.append([name, f"{f.accuracy_before:.3f}", f"{f.accuracy_after:.3f}", f"{f.forgetting:+.3f}",
                         f"{f.agreement:.3f}"])
        else:
            rows.append([name, "-", "-", "-", f"{f.agreement:.3f}"])
    if not rows:
        return None
    blocks = [Table(["strategy", "source acc. before", "after", "forgetting", "source-head agreement"], rows),
              Text("Forgetting = source-task accuracy of the pre-trained model minus that of the fine-tuned "
                   "backbone with the original source head, on the source data given to the run "
                   "or to compare (--source-data). Without source data only the agreement of the two source heads' "
                   "predictions on the target validation inputs is shown: a proxy, not an accuracy.")]
    if notes:
        blocks.append(Bullets(notes))
    return Section("Forgetting of the source task", blocks, data=data | {"notes": notes})


def _source_data(run_dir) -> str | None:
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return (config.get("strategy_options") or {}).get("source_data")


@register_diagnostic(
    "forgetting", order=20, help="source-task accuracy before/after fine-tuning (or agreement proxy)",
    arguments=[
        arg("--run", required=True),
        arg("--source-data", help="labelled source data: class folders named by source class index or "
                                  "ImageNet name, or digits:0-4; without it, the agreement proxy"),
        arg("--split", choices=["val", "test", "train"], default="val"),
        arg("--class-map", help="NAME=INDEX,... source class index per class folder, e.g. ants=310"),
        arg("--json", action="store_true"),
    ],
    section=section("forgetting", order=66, build=forgetting_section))
def cmd_forgetting(args) -> None:
    from transferlab.console import print_json

    r = forgetting_for_run(args.run, args.source_data, split=args.split, class_map=_class_map(args.class_map))
    if args.json:
        print_json(r.to_dict())
        return
    if r.mode == "agreement_proxy":
        print(f"source-head agreement (original vs fine-tuned backbone) on {r.examples} target inputs: "
              f"{r.agreement:.4f}\n(a proxy without source data: 1.0 = the source head still sees the same "
              f"features; pass --source-data for source-task accuracy)")
        return
    print(f"source task {r.data} ({r.split}, {r.examples} examples, source classes {r.source_classes}):")
    print(f"  accuracy before {r.accuracy_before:.4f}  after {r.accuracy_after:.4f}  "
          f"forgetting {r.forgetting:+.4f}")
    print(f"  among the present source classes only: before {r.restricted_accuracy_before:.4f}  "
          f"after {r.restricted_accuracy_after:.4f}; agreement {r.agreement:.4f}")


def _class_map(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    from transferlab.errors import ConfigError

    out = {}
    for item in text.split(","):
        name, eq, index = item.partition("=")
        if not eq or not index.strip().isdigit():
            raise ConfigError(f"--class-map: expected NAME=INDEX, got {item!r}")
        out[name.strip()] = int(index)
    return out
