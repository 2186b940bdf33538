"""The transfer curve: target-task accuracy after fine-tuning from each pre-training checkpoint (and from random
init, "scratch"), per strategy, against how long the source model was pre-trained. Pure analysis and rendering:
records in, a JSON-able summary out, and a CSV, a PNG and a report Section drawn from that summary alone.

    summary = summarize_curve(records)     # records: one dict per finished fine-tuning run (below)
    curve_csv(summary); curve_figure(summary); curve_section(summary)

A record: {"checkpoint": "epoch_4" | "scratch", "epoch": 4 | None, "source_val_accuracy": 0.81 | None,
           "strategy": "linear_probe" | "scratch", "seed": 0, "val_accuracy": 0.70, "val_n": 200,
           "test_accuracy": 0.68 | None, "test_n": 5000 | None}

Choices, and why:
- The metric is test accuracy when every record has one, else validation accuracy for all of them (one metric
  per curve; mixing would compare numbers from different splits).
- The best checkpoint of a strategy is chosen on mean validation accuracy and reported with its metric: choosing
  on test would make the reported test number optimistic. Ties go to the earliest epoch (the cheaper one).
- Gap = a (strategy, checkpoint)'s mean metric minus scratch's (negative: transfer hurt). Note the sign is the
  opposite of results.py's `negative_transfer_gap` (scratch minus transfer, Wang et al. 2019); the verdict words
  ("hurts" / "helps") make the direction explicit either way.
- Every verdict goes through `transferlab.stats`, the project's one rule: paired on the examples when the records
  carry each run's per-example correctness (`val_correct` / `test_correct`, (N,) bool), else from the per-seed
  accuracies and the split size (the n of a point is the smallest split a seed was scored on, as results.py
  does; with no n known the interval is unbounded and every verdict is "within noise"). The gaps against scratch
  of one curve are one family, Holm-corrected together.
- Non-finite numbers (an unbounded interval) are stored as None, so the summary is strict JSON.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Mapping

from matplotlib.ticker import MaxNLocator

from transferlab.compare.grid import SCRATCH
from transferlab import stats as tests
from transferlab.errors import ConfigError
from transferlab.figures import new_figure, png_bytes
from transferlab.sections import Bullets, Figure, Section, Table, Text

logger = logging.getLogger(__name__)

TITLE = "Transfer curve: target accuracy against pre-training length"
CSV_COLUMNS = ["strategy", "checkpoint", "epoch", "source_val_accuracy", "n", "mean", "std", "gap", "gap_low",
               "gap_high", "verdict"]
HURTS, HELPS, WITHIN_NOISE = "hurts", "helps", "within noise"
_REQUIRED = ("checkpoint", "strategy", "seed", "val_accuracy")


# ---- checking the records --------------------------------------------------------------------------------
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _checked(records) -> list[Mapping]:
    """The records as a list, or a ConfigError naming the first record that cannot be summarised."""
    if records is None:
        raise ConfigError("transfer curve: no records were given (None)")
    runs = list(records)
    if not runs:
        raise ConfigError("transfer curve: no fine-tuning records to summarise (the list is empty)")
    seen, checkpoints = set(), {}
    for i, r in enumerate(runs):
        where = f"transfer curve: record {i}"
        if not isinstance(r, Mapping):
            raise ConfigError(f"{where} is a {type(r).__name__}, not a dict")
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)}")
        strategy, checkpoint = r["strategy"], r["checkpoint"]
        where += f" ({strategy} from {checkpoint}, seed {r['seed']})"
        if (strategy == SCRATCH) != (checkpoint == SCRATCH):
            raise ConfigError(f"{where}: the baseline has strategy {SCRATCH!r} and checkpoint {SCRATCH!r}, "
                              "both or neither")
        if strategy != SCRATCH and not _is_number(r.get("epoch")):
            raise ConfigError(f"{where}: epoch {r.get('epoch')!r} is not a number (only scratch has none)")
        for key, required in (("val_accuracy", True), ("test_accuracy", False), ("source_val_accuracy", False)):
            v = r.get(key)
            if (v is None and required) or (v is not None and not (_is_number(v) and 0.0 <= v <= 1.0)):
                raise ConfigError(f"{where}: {key} {v!r} is not an accuracy in [0, 1]")
        key = (strategy, checkpoint, r["seed"])
        if key in seen:  # a run counted twice would shrink its seed error
            raise ConfigError(f"{where} appears twice")
        seen.add(key)
        if checkpoint != SCRATCH:
            info = (r["epoch"], r.get("source_val_accuracy"))
            if checkpoints.setdefault(checkpoint, info) != info:
                raise ConfigError(f"{where}: checkpoint {checkpoint} has epoch/source accuracy {info}, another "
                                  f"record gives {checkpoints[checkpoint]}")
    return runs


# ---- numbers ---------------------------------------------------------------------------------------------
def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _min_n(runs: list[Mapping], key: str) -> int | None:
    # the smallest split a seed was scored on: the conservative n when seeds differ (as results._min_n)
    ns = [r.get(key) for r in runs if r.get(key)]
    return min(ns) if ns else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _stats(runs: list[Mapping], metric: str, n_key: str) -> dict:
    """One point's numbers (JSON-able)."""
    mean, std = _mean_std([r[metric] for r in runs])
    val_mean, val_std = _mean_std([r["val_accuracy"] for r in runs])
    return {"n": len(runs), "seeds": [r["seed"] for r in runs], "mean": mean, "std": std,
            "n_examples": _min_n(runs, n_key), "val_mean": val_mean, "val_std": val_std,
            "val_n": _min_n(runs, "val_n")}


def _compare(a: list[Mapping], b: list[Mapping], metric: str, n_key: str) -> tests.Comparison:
    """Point a's metric minus point b's: paired on the examples when every run kept its per-example correctness
    on the metric's split (the same examples), else from the per-seed accuracies."""
    key = metric.replace("_accuracy", "_correct")
    ea, eb = [r.get(key) for r in a], [r.get(key) for r in b]
    arrays = [x for x in ea + eb if x is not None]
    if len(arrays) == len(ea) + len(eb) and len({len(x) for x in arrays}) == 1:
        return tests.paired_runs(ea, eb)
    return tests.unpaired_accuracies([r[metric] for r in a], _min_n(a, n_key), [r[metric] for r in b],
                                     _min_n(b, n_key))


def _verdict(d: tests.Comparison) -> str:
    return WITHIN_NOISE if not d.significant else HELPS if d.estimate > 0 else HURTS


def _difference(d: tests.Comparison) -> dict:
    return {"difference": d.estimate, "low": _finite(d.low), "high": _finite(d.high), "p_value": _finite(d.p_value),
            "method": d.method, "significant": d.significant}


def summarize_curve(records: Iterable[Mapping]) -> dict:
    """The transfer curve's numbers, JSON-serialisable (module docstring: the choices). Keys:

    metric, metric_reason, rule, gap_definition,
    source_curve: [{checkpoint, epoch, source_val_accuracy}] ordered by epoch,
    scratch: {n, seeds, mean, std, n_examples, val_mean, val_std, val_n} or None (no baseline run),
    strategies: {name: {points: [{checkpoint, epoch, source_val_accuracy, <scratch's keys>, gap, gap_low, gap_high,
                                  gap_p (Holm-adjusted), verdict}] ordered by epoch,
                        best: {checkpoint, epoch, val_mean, val_std, mean, std, n},
                        last_vs_best: {checkpoint, epoch, mean, difference, low, high, p_value, method,
                                       significant} (last - best),
                        early_vs_last: {checkpoint, epoch, mean, last_epoch, last_mean, difference, low, high,
                                        p_value, method, significant} (the highest source-val checkpoint minus
                                        the last) or None}}
    """
    runs = _checked(records)
    have_test = sum(r.get("test_accuracy") is not None for r in runs)
    metric = "test_accuracy" if have_test == len(runs) else "val_accuracy"
    n_key = "test_n" if metric == "test_accuracy" else "val_n"
    reason = ("every run has a test accuracy" if metric == "test_accuracy" else
              f"{len(runs) - have_test} of {len(runs)} runs have no test accuracy, so validation accuracy is used "
              "for every run")
    if metric == "val_accuracy":
        logger.info("transfer curve: %s", reason)

    groups: dict[tuple[str, str], list[Mapping]] = {}
    for r in runs:
        groups.setdefault((r["strategy"], r["checkpoint"]), []).append(r)
    source_curve = sorted(({"checkpoint": r["checkpoint"], "epoch": r["epoch"],
                            "source_val_accuracy": r.get("source_val_accuracy")}
                           for r in {r["checkpoint"]: r for r in runs if r["strategy"] != SCRATCH}.values()),
                          key=lambda c: (c["epoch"], str(c["checkpoint"])))

    scratch_runs = groups.get((SCRATCH, SCRATCH))
    scratch = _stats(scratch_runs, metric, n_key) if scratch_runs else None
    strategies, gaps = {}, []  # gaps: (point, Comparison) of the whole curve, one Holm family
    for name in dict.fromkeys(r["strategy"] for r in runs if r["strategy"] != SCRATCH):
        points, members = [], []
        for cp in source_curve:
            group = groups.get((name, cp["checkpoint"]))
            if not group:
                continue
            point = {**cp, **_stats(group, metric, n_key), "gap": None, "gap_low": None, "gap_high": None,
                     "gap_p": None, "verdict": None}
            if scratch_runs:
                gaps.append((point, _compare(group, scratch_runs, metric, n_key)))
            points.append(point)
            members.append(group)
        # selection on validation only; ties: the earliest epoch
        b = max(range(len(points)), key=lambda i: (points[i]["val_mean"], -points[i]["epoch"]))
        best, last = points[b], points[-1]
        d = _compare(members[-1], members[b], metric, n_key)
        # The checkpoint early stopping on the source would keep (highest source validation accuracy; ties: the
        # earliest) against the last one: does stopping pre-training early transfer better? (early - last)
        scored = [i for i, p in enumerate(points) if p["source_val_accuracy"] is not None]
        early_vs_last = None
        if scored:
            e = max(scored, key=lambda i: (points[i]["source_val_accuracy"], -points[i]["epoch"]))
            d_early = _compare(members[e], members[-1], metric, n_key)
            early_vs_last = {"checkpoint": points[e]["checkpoint"], "epoch": points[e]["epoch"],
                             "mean": points[e]["mean"], "last_epoch": last["epoch"], "last_mean": last["mean"],
                             **_difference(d_early)}
        strategies[name] = {
            "early_vs_last": early_vs_last,
            "points": points,
            "best": {k: best[k] for k in ("checkpoint", "epoch", "val_mean", "val_std", "mean", "std", "n")},
            "last_vs_best": {"checkpoint": last["checkpoint"], "epoch": last["epoch"], "mean": last["mean"],
                             **_difference(d)},
        }
    for (point, _), d in zip(gaps, tests.holm([d for _, d in gaps])):
        point.update(gap=d.estimate, gap_low=_finite(d.low), gap_high=_finite(d.high), gap_p=_finite(d.p_adjusted),
                     verdict=_verdict(d))
    return {"metric": metric, "metric_reason": reason, "rule": tests.RULE,
            "gap_definition": f"mean {metric} of the (strategy, checkpoint) minus mean {metric} from scratch; "
                              "negative: transfer hurt",
            "source_curve": source_curve, "scratch": scratch, "strategies": strategies}


# ---- rendering -------------------------------------------------------------------------------------------
def _metric_name(summary: dict) -> str:
    return summary["metric"].replace("_", " ")


def _epoch(epoch) -> str:
    return f"{epoch:g}" if isinstance(epoch, float) else str(epoch)


def _f(x, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _band(x, low, high) -> str:
    """'+0.020 [-0.003, +0.043]': an estimate and its 95% interval."""
    if low is None or high is None:
        return f"{x:+.3f} (n unknown, no noise band)"
    return f"{x:+.3f} [{low:+.3f}, {high:+.3f}]"


def curve_csv(summary: dict) -> str:
    """One row per (strategy, checkpoint), columns CSV_COLUMNS; n: seeds; mean, std: the summary's metric;
    an empty cell: no number (no scratch baseline, an unbounded interval, no source accuracy)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, s in summary["strategies"].items():
        for p in s["points"]:
            writer.writerow(["" if v is None else v for v in
                             [name, p["checkpoint"], p["epoch"], p["source_val_accuracy"], p["n"], p["mean"],
                              p["std"], p["gap"], p["gap_low"], p["gap_high"], p["verdict"]]])
    return buf.getvalue()


def curve_figure(summary: dict) -> bytes:
    """PNG: the metric (mean ± std over seeds) against pre-training epoch, one line per strategy; scratch as a
    horizontal band (mean ± std); the checkpoints' source validation accuracy dashed, on the right axis."""
    fig, ax = new_figure(figsize=(7, 4.2))
    scratch = summary["scratch"]
    if scratch is not None:
        ax.axhspan(scratch["mean"] - scratch["std"], scratch["mean"] + scratch["std"], color="0.6", alpha=0.25,
                   lw=0)
        ax.axhline(scratch["mean"], color="0.4", lw=1, label=f"scratch (mean ± std, {scratch['n']} seeds)")
    for i, (name, s) in enumerate(summary["strategies"].items()):
        pts = s["points"]
        ax.errorbar([p["epoch"] for p in pts], [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                    fmt="-o", ms=4, capsize=3, color=f"C{i % 10}", label=name)
    ax.set_xlabel("pre-training epoch of the checkpoint")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"target {_metric_name(summary)}")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    source = [c for c in summary["source_curve"] if c["source_val_accuracy"] is not None]
    if source:
        ax2 = ax.twinx()
        ax2.plot([c["epoch"] for c in source], [c["source_val_accuracy"] for c in source], "--s", ms=3,
                 color="0.25", label="source val accuracy (right)")
        ax2.set_ylabel("source validation accuracy")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="best")
    ax.set_title("Transfer curve", fontsize=10)
    return png_bytes(fig)


def _best_sentence(name: str, s: dict, metric: str) -> str:
    best, lvb = s["best"], s["last_vs_best"]
    se = f" ± {best['std']:.3f} (std over {best['n']} seed{'s' if best['n'] != 1 else ''})"
    line = (f"{name}: best at epoch {_epoch(best['epoch'])} (val {best['val_mean']:.3f}), "
            f"{metric} {best['mean']:.3f}{se}")
    if lvb["checkpoint"] == best["checkpoint"]:
        return line + f"; it is the last checkpoint (epoch {_epoch(lvb['epoch'])})."
    diff = lvb["difference"]
    direction = "lower" if diff < 0 else "higher" if diff > 0 else "different"
    noise = "beyond noise" if lvb["significant"] else "within noise"
    return (line + f"; the last checkpoint (epoch {_epoch(lvb['epoch'])}) is {abs(diff):.3f} {direction}, "
            f"{noise} ({_band(diff, lvb['low'], lvb['high'])}).")


def _early_sentence(name: str, s: dict, mname: str) -> str | None:
    e = s.get("early_vs_last")
    if e is None:
        return None
    if e["epoch"] == e["last_epoch"]:
        return (f"{name}: the source's best validation checkpoint is the last one (epoch {_epoch(e['epoch'])}), so "
                f"early stopping changes nothing here.")
    verdict = "better" if e["difference"] > 0 else "worse"
    noise = f"{verdict}, beyond noise" if e["significant"] else "within noise"
    return (f"{name}: from the early-stopped checkpoint (epoch {_epoch(e['epoch'])}, the source's best validation "
            f"accuracy) {mname} {e['mean']:.3f}, from the last (epoch {_epoch(e['last_epoch'])}) "
            f"{e['last_mean']:.3f}: early minus last {_band(e['difference'], e['low'], e['high'])}, {noise}.")


def _gap_sentence(name: str, s: dict, scratch: dict) -> str:
    parts = [f"epoch {_epoch(p['epoch'])} {_band(p['gap'], p['gap_low'], p['gap_high'])} {p['verdict']}"
             for p in s["points"]]
    return f"{name} minus scratch ({scratch['mean']:.3f}): " + "; ".join(parts) + "."


def curve_section(summary: dict) -> Section:
    """The report section: what is measured and the noise rule, a table, the figure, the sentences (all from
    the summary's numbers), and the summary itself as data."""
    metric, mname, scratch = summary["metric"], _metric_name(summary), summary["scratch"]
    text = (f"Each point fine-tunes the target task from one pre-training checkpoint; the metric is **{mname}** "
            f"({summary['metric_reason']}), mean ± sample std over seeds. ")
    if metric == "val_accuracy":
        text += ("Validation accuracy is then both the selection criterion and the reported number, so the best "
                 "checkpoint's value is optimistic. ")
    if scratch is not None:
        text += (f"From scratch: {scratch['mean']:.3f} ± {scratch['std']:.3f} ({scratch['n']} seed"
                 f"{'s' if scratch['n'] != 1 else ''}). Gap: a point's mean {mname} minus scratch's "
                 "(negative: transfer hurt). ")
    else:
        text += "No from-scratch run, so no gap. "
    text += (f"The best checkpoint of a strategy is the one with the highest mean validation accuracy. "
             f"A gap is called hurts or helps, and a difference beyond noise, only under one rule: {tests.RULE} "
             "otherwise it is within noise.")
    headers = ["strategy", "checkpoint", "epoch", "source val acc", "seeds", f"{mname} (mean ± std)",
               "val acc (mean)", "gap vs scratch [95% interval]", "verdict"]
    rows = [[name, str(p["checkpoint"]), _epoch(p["epoch"]), _f(p["source_val_accuracy"]), str(p["n"]),
             f"{p['mean']:.3f} ± {p['std']:.3f}", f"{p['val_mean']:.3f}",
             "-" if p["gap"] is None else _band(p["gap"], p["gap_low"], p["gap_high"]), p["verdict"] or "-"]
            for name, s in summary["strategies"].items() for p in s["points"]]
    items = [_best_sentence(name, s, mname) for name, s in summary["strategies"].items()]
    items += [x for x in (_early_sentence(name, s, mname) for name, s in summary["strategies"].items()) if x]
    if scratch is not None:
        items += [_gap_sentence(name, s, scratch) for name, s in summary["strategies"].items()]
    caption = (f"Target {mname} (mean ± std over seeds) against the checkpoint's pre-training epoch, one line per "
               "strategy" + ("; grey band: from scratch, mean ± std" if scratch is not None else "")
               + "; dashed, right axis: the checkpoint's source-task validation accuracy.")
    return Section(TITLE, [Text(text), Table(headers, rows), Figure("transfer_curve", curve_figure(summary), caption),
                           Bullets(items)], data=summary)
