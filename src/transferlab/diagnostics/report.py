"""Report sections for `transferlab compare`: CKA by depth, forgetting, BatchNorm shift (per strategy).

Importing this module registers them with `transferlab.compare.report.register_section`. Each uses the first
finished seed of each strategy, bounds its cost (CKA and BN shift on at most `MAX_BATCHES` evaluation
batches), and turns a failure into a note: a diagnostic must not sink the report.
"""
from __future__ import annotations

import logging

from transferlab.diagnostics._common import figure_png, first_finished_runs
from transferlab.sections import Bullets, Figure, Section, Table, Text, register_section
from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_BATCHES = 4


@register_section("cka", order=65)
def cka_section(ctx) -> Section | None:
    from transferlab.diagnostics.drift import drift_for_run
    from transferlab.figures import new_figure

    results, notes = {}, []
    for name, run_dir in first_finished_runs(ctx, "cka"):
        try:
            d = drift_for_run(run_dir, max_batches=MAX_BATCHES, cache=ctx.cache)
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


@register_section("forgetting", order=66)
def forgetting_section(ctx) -> Section | None:
    from transferlab.diagnostics.forgetting import forgetting_for_run

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


@register_section("bn_shift", order=67)
def bn_shift_section(ctx) -> Section | None:
    from transferlab.diagnostics.bn import bn_shift_for

    rows, data, notes = [], {}, []
    for name, run_dir in first_finished_runs(ctx, "bn_shift"):
        try:
            r = bn_shift_for(None, run_dir=run_dir, max_batches=MAX_BATCHES)
        except ConfigError as exc:
            if "no BatchNorm layers" in str(exc):  # a text model: the section has nothing to say
                continue
            notes.append(f"{name}: not computed ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name}: not computed ({type(exc).__name__}: {exc})")
            continue
        if not r.layers:
            continue
        data[name] = r.to_dict()
        worst = max(r.layers, key=lambda layer: layer.skl)
        rows.append([name, f"{r.mean_skl:.4f}", f"{worst.name} ({worst.skl:.3f})"])
    if not rows:
        return None
    blocks = [Table(["strategy", "mean BN symmetric KL", "largest (layer)"], rows),
              Text("How far the validation data's per-channel statistics at each BatchNorm layer are from the "
                   "layer's stored running statistics (symmetric KL of the two Gaussians, mean over channels "
                   "and layers). Large values suggest `transferlab adapt-bn`.")]
    if notes:
        blocks.append(Bullets(notes))
    return Section("BatchNorm statistics on the target data", blocks, data=data | {"notes": notes})


# Sections defined beside their diagnostic register on import, with the ones above.
from transferlab.diagnostics import probe as _probe_section  # noqa: E402,F401  isort: skip
from transferlab.diagnostics import frequency_report as _frequency_section  # noqa: E402,F401  isort: skip
