"""Feature drift: how far fine-tuning moved each depth group, in weights and in representations.

Per depth group (input side first):
- weight_change = ||w - w0|| / ||w0|| over the group's pre-trained parameters (w0: a fresh build of the
  pre-trained model), of the effective weights (LoRA merged; see `weights.py`); None for the new head, which
  has no pre-trained value, and for adapter runs (extra layers beside unchanged backbone weights);
- cka = linear CKA between the pre-trained and the fine-tuned model's group outputs on target inputs
  (pooled to (B, D)), averaged over minibatches with the unbiased HSIC estimator (see `cka.py`); None for
  the head, whose pre-trained counterpart is a random new head.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from transferlab.diagnostics._common import REPORT_MAX_BATCHES, GroupOutputs, figure_png, first_finished_runs, \
    has_reproducible_start, make_loader, pretrained_key, reference_model, save_figure, split_of, target_batches
from transferlab.diagnostics.cka import MIN_BATCH, MinibatchCKA
from transferlab.sections import Bullets, Figure, Section, Table, Text
from transferlab.diagnostics.registry import arg, at_least_one, register_diagnostic, section
from transferlab.errors import ConfigError
from transferlab.diagnostics.weights import model_weight_change, run_weight_change

logger = logging.getLogger(__name__)


@dataclass
class GroupDrift:
    name: str
    index: int
    weight_change: float | None
    cka: float | None


@dataclass
class DriftResult:
    run: str
    data: str
    split: str
    examples: int
    batches: int
    estimator: str = "linear CKA, unbiased HSIC averaged over minibatches (Nguyen et al. 2021)"
    note: str = ""
    groups: list[GroupDrift] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def group_outputs(model, loader, device, max_batches: int | None = None) -> tuple[list[list], int]:
    """The pooled (B, D) output of every depth group, per batch (None where a group did not run), and the
    number of examples seen."""
    model.eval()
    hooks = GroupOutputs(model)
    per_batch, examples = [], 0
    try:
        for batch in target_batches(loader, device, max_batches):
            per_batch.append(hooks.run(model, batch))
            examples += batch["labels"].numel()
    finally:
        hooks.close()
    return per_batch, examples


@torch.no_grad()
def representation_cka(model, reference, loader, device, max_batches: int | None = None, unbiased: bool = True,
                       reference_outputs: list[list] | None = None) -> tuple[list[float | None], int, int]:
    """(CKA per depth group, examples seen, batches used) between the two models' group outputs, in one pass
    over the loader. `reference_outputs`: the reference's `group_outputs` on the same loader, when already
    computed (the reference then does not run)."""
    model.eval()
    reference.eval()
    hooks_a = GroupOutputs(model)
    hooks_b = GroupOutputs(reference) if reference_outputs is None else None
    accs = [MinibatchCKA(unbiased=unbiased) for _ in model.depth_groups]
    examples = batches = left_out = 0
    try:
        for batch in target_batches(loader, device, max_batches):
            if batch["labels"].numel() < MIN_BATCH:  # MinibatchCKA skips it: say so rather than lose it quietly
                left_out += batch["labels"].numel()
            outs_a = hooks_a.run(model, batch)
            outs_b = hooks_b.run(reference, batch) if hooks_b is not None else reference_outputs[batches]
            for acc, a, b in zip(accs, outs_a, outs_b):
                if a is not None and b is not None:
                    acc.update(a, b)
            examples += batch["labels"].numel()
            batches += 1
    finally:
        hooks_a.close()
        if hooks_b is not None:
            hooks_b.close()
    if left_out:
        logger.warning("CKA left out %d of %d examples, in minibatches of fewer than %d (the unbiased HSIC "
                       "estimator's minimum)", left_out, examples, MIN_BATCH)
    return [acc.value() if acc.batches else None for acc in accs], examples, batches


def drift(model, reference, loader, device, max_batches: int | None = None,
          reference_outputs: list[list] | None = None,
          changes: list[float | None] | None = None) -> tuple[list[GroupDrift], int, int]:
    """(per-group drift, examples, batches). `changes`: the weight changes, when already computed
    (`model_weight_change` with the run's strategy, which merges added modules); else of `model` as it is."""
    if changes is None:
        changes, _ = model_weight_change(model, reference)
    ckas, examples, batches = representation_cka(model, reference, loader, device, max_batches,
                                                  reference_outputs=reference_outputs)
    head = len(model.depth_groups) - 1
    groups = [GroupDrift(g.name, i, changes[i], None if i == head else ckas[i])
              for i, g in enumerate(model.depth_groups)]
    return groups, examples, batches


def drift_for_run(run_dir: str | Path, data: str | None = None, split: str = "val",
                  max_batches: int | None = None, batch_size: int | None = None,
                  cache: dict | None = None) -> DriftResult:
    """Weight change and CKA per depth group of a run, on its own data (or `data`, same classes).

    `cache` (e.g. a comparison report's): the pre-trained model's group outputs are kept there and reused by
    every run whose reference has the same model, weights, parameters and data.
    """
    from transferlab.runs import load_run
    from transferlab.training.trainer import resolve_device

    # before the run loads: zero batches would read nothing and print empty results, and a minibatch below
    # MIN_BATCH gives no CKA at all (the unbiased estimator is undefined there)
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"--max-batches must be at least 1, got {max_batches} (leave it out to use every batch)")
    if batch_size is not None and batch_size < MIN_BATCH:
        raise ConfigError(f"--batch-size {batch_size}: CKA's unbiased HSIC estimator needs at least {MIN_BATCH} "
                          f"examples per minibatch; use --batch-size {MIN_BATCH} or more")
    config, bundle, model, strategy = load_run(run_dir, data)
    device = resolve_device(config.train.device, fallback=True)
    reference = reference_model(config, strategy)
    note = ""
    if not has_reproducible_start(config.model, config.weights):
        note = (f"{config.model} was fine-tuned from a random initialisation (no --weights): the reference is "
                f"another random draw, so these numbers do not measure drift")
        logger.warning(note)
    model.to(device)
    reference.to(device)
    bs = batch_size or config.train.eval_batch_size
    loader = make_loader(bundle, split_of(bundle, split), bs)
    reference_outputs = None
    if cache is not None and not note:  # a random reference is a new draw each time: nothing to share
        # The parameter names tell a plain pre-trained reference from one a strategy gave modules (LoRA, ...).
        key = pretrained_key("drift", config, data or config.data, split, bs, max_batches,
                             tuple(n for n, _ in reference.named_parameters()))
        if key not in cache:
            cache[key] = group_outputs(reference, loader, device, max_batches)[0]
        reference_outputs = cache[key]
    changes, weight_note = run_weight_change(config, model, reference, strategy)
    groups, examples, batches = drift(model, reference, loader, device, max_batches, reference_outputs, changes)
    cka_note = ""
    if examples and all(g.cka is None for g in groups[:-1]):  # the head never has one
        cka_note = (f"no CKA: no minibatch held {MIN_BATCH} examples (the unbiased HSIC estimator's minimum; "
                    f"{examples} {split} examples in {batches} minibatches of at most {bs}); use --batch-size "
                    f"{MIN_BATCH} or more, or a split with more examples")
        logger.warning(cka_note)
    return DriftResult(run=str(run_dir), data=config.data, split=split, examples=examples, batches=batches,
                       note="; ".join(n for n in (note, weight_note, cka_note) if n), groups=groups)


def plot_drift(results: list[DriftResult], path: str | Path, labels: list[str] | None = None) -> Path:
    """CKA (top) and relative weight change (bottom) by depth group, one line per run; saved as PNG."""
    from transferlab.figures import new_figure

    fig, (top, bottom) = new_figure(2, 1, figsize=(8, 6), sharex=True)
    for i, r in enumerate(results):
        label = labels[i] if labels else r.run
        xs = [g.index for g in r.groups]
        top.plot(xs, [g.cka if g.cka is not None else float("nan") for g in r.groups], marker="o", label=label)
        bottom.plot(xs, [g.weight_change if g.weight_change is not None else float("nan") for g in r.groups],
                    marker="o", label=label)
    names = [g.name for g in results[0].groups] if results else []
    bottom.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    top.set_ylabel("CKA pre-trained vs fine-tuned")
    bottom.set_ylabel("||w - w0|| / ||w0||")
    top.legend(fontsize=8)
    return save_figure(fig, path)


# ---- the command and the report section (transferlab.diagnostics.registry) ---------------------------------
def cka_section(ctx) -> Section | None:
    from transferlab.figures import new_figure

    results, notes = {}, []
    for name, run_dir in first_finished_runs(ctx, "cka"):
        try:
            d = drift_for_run(run_dir, max_batches=REPORT_MAX_BATCHES, cache=ctx.cache)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name}: not computed ({type(exc).__name__}: {exc})")
            continue
        if d.note:
            notes.append(f"{name}: {d.note}")
            continue
        results[name] = d
    if not results:
        return Section("Representation similarity to the pre-trained model (CKA)",
                       [Text("Not computed: " + ("; ".join(notes) or "no finished runs"))])
    groups = [g.name for g in next(iter(results.values())).groups][:-1]  # the head has no pre-trained output
    fig, ax = new_figure(figsize=(8, 3.5))
    for name, d in results.items():
        ax.plot(range(len(groups)), [g.cka for g in d.groups[:-1]], marker="o", label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("linear CKA")
    ax.legend(fontsize=8)
    rows = [[g] + [f"{d.groups[i].cka:.3f}" if d.groups[i].cka is not None else "-" for d in results.values()]
            for i, g in enumerate(groups)]
    blocks = [Figure("cka", figure_png(fig), "Linear CKA between the pre-trained and the fine-tuned model's output of "
                     "each depth group on validation inputs (unbiased minibatch estimator, Nguyen et al. 2021; "
                     "first seed; 1 = unchanged representation)."),
              Table(["depth group"] + list(results), rows, css_class="small")]
    if notes:
        blocks.append(Bullets(notes))
    return Section("Representation similarity to the pre-trained model (CKA)", blocks,
                   data={name: d.to_dict() for name, d in results.items()} | {"notes": notes})


@register_diagnostic(
    "drift", order=10, help="per depth group: relative weight change and CKA to the pre-trained model",
    arguments=[
        arg("--run", required=True, help="run directory"),
        arg("--data", help="target data (default: the run's own; same classes)"),
        arg("--split", choices=["val", "test", "train"], default="val"),
        arg("--max-batches", type=at_least_one, help="use at most this many evaluation batches (>= 1)"),
        arg("--batch-size", type=int, help="minibatch size for CKA, at least 4 (the unbiased estimator's "
                                           "minimum; default: the run's eval batch size)"),
        arg("--plot", metavar="FILE.png", help="write CKA and weight change by depth as a PNG"),
        arg("--json", action="store_true", help='print {"groups": [{"name", "weight_change", "cka"}]}'),
    ],
    section=section("cka", order=65, build=cka_section))
def cmd_drift(args) -> None:
    from transferlab.console import format_number, print_json, print_table
    from transferlab.outputs import check_plot_path

    plot = check_plot_path(args.plot, inputs={"--data": args.data})  # before minutes of work
    result = drift_for_run(args.run, args.data, split=args.split, max_batches=args.max_batches,
                           batch_size=args.batch_size)
    if plot:
        plot_drift([result], plot)
    if args.json:
        print_json({"groups": [{"name": g.name, "weight_change": g.weight_change, "cka": g.cka}
                               for g in result.groups], "examples": result.examples, "note": result.note})
        return
    if result.note:
        print(f"note: {result.note}")
    print_table([["group", "weight_change", "cka"]] +
           [[g.name, format_number(g.weight_change), format_number(g.cka)] for g in result.groups])
    print(f"({result.examples} {result.split} examples of {result.data}, {result.batches} minibatches; "
          f"{result.estimator})")
