"""The report's section for a grid given `--target-data`: what can select a strategy for the target without its
labels. Per strategy, source-validation accuracy and Deep Embedded Validation's target risk (You et al. 2019,
training/dev.py), mean ± std over seeds; the test labels of the target are never part of the choice."""
from __future__ import annotations

from transferlab.compare.report import Bullets, Section, Table, Text, register_section


def _mean_std(summary, key: str) -> tuple[float, float] | None:
    """(mean, std) over the strategy's finished seeds, from its StrategySummary; None when no run has `key`."""
    if summary is None or summary.mean.get(key) is None:
        return None
    return summary.mean[key], summary.std[key]


def _cell(pair) -> str:
    return "-" if pair is None else f"{pair[0]:.3f} ± {pair[1]:.3f}"


@register_section("target_selection", order=18)
def target_selection_section(ctx) -> Section | None:
    r = ctx.results
    target = r.target_data
    if not target and not any(s.mean.get("dev_risk") is not None for s in r.summaries.values()):
        return None
    rows, data = [], {"target_data": target, "strategies": {}}
    for name in r.strategies:
        val = _mean_std(r.summaries.get(name), "val_accuracy")
        dev = _mean_std(r.summaries.get(name), "dev_risk")
        data["strategies"][name] = {"val_accuracy": val, "dev_risk": dev}
        rows.append([name, _cell(val), _cell(dev)])
    ranked = [n for n in data["strategies"] if data["strategies"][n]["dev_risk"] is not None]
    best_dev = min(ranked, key=lambda n: data["strategies"][n]["dev_risk"][0]) if ranked else None
    best_val = max((n for n in data["strategies"] if data["strategies"][n]["val_accuracy"] is not None),
                   key=lambda n: data["strategies"][n]["val_accuracy"][0], default=None)
    data["best_by_dev"], data["best_by_val"] = best_dev, best_val
    items = [f"Lowest target risk by Deep Embedded Validation: **{best_dev}**; highest source-validation accuracy: "
             f"**{best_val}**" + ("" if best_dev == best_val else " (they disagree: the domains differ, and source "
                                                                   "validation does not measure the target)") + "."]
    items.append("Neither number reads a target label. Differences between strategies within about one standard "
                 "deviation over seeds are noise.")
    return Section("Selecting for the target domain without its labels", [
        Text(f"Every run was given unlabelled target data ({target}). Source-validation accuracy (higher is better) "
             "says how each strategy does on the labelled domain; Deep Embedded Validation (You et al. 2019, lower "
             "is better) estimates its risk on the target by importance-weighting the source-validation losses with "
             "a domain classifier's density ratio. Mean ± std over seeds."),
        Table(["strategy", "source validation accuracy", "target risk (DEV)"], rows), Bullets(items)], data=data)
