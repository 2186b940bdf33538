"""The comparison report: a list of registered sections, each turning the grid's results into content blocks
(text, bullet lists, tables, figures) plus data for results.json; two renderers write them as Markdown (with
PNG files beside it) and as one self-contained HTML file (PNGs base64-embedded).

Other packages add sections without touching this file:

    from transferlab.sections import Section, Table, register_section

    @register_section("cka", order=65)
    def cka_section(ctx):            # ctx: ReportContext (results, out dir, a cache shared by sections)
        ...
        return Section("Representation similarity (CKA)", [Figure("cka", png, "caption")], data={...})

A section returns None to leave itself out; one that raises is replaced by a note naming the error.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from transferlab import stats
from transferlab.compare.grid import SCRATCH
from transferlab.compare.results import OVERFIT_THRESHOLD, SUMMARY_FIELDS, GridResults
from transferlab.progress import Progress
from transferlab.safe_io import atomic_write_bytes, atomic_write_json, atomic_write_text
from transferlab.sections import (_SECTIONS, Bullets, Figure, Section, Table, Text,  # noqa: F401  (re-exported)
                                  list_sections, register_section)

logger = logging.getLogger(__name__)


# ---- the context sections get ---------------------------------------------------------------------------
@dataclass
class ReportContext:
    results: GridResults
    out: Path
    cache: dict = field(default_factory=dict)  # shared by sections, e.g. loaded models
    source_data: str | None = None  # source-task data for runs that were not given any (forgetting)
    contamination: str | None = None  # a `transferlab contamination` folder of the test split (contamination)


# ---- formatting ------------------------------------------------------------------------------------------
def _pm(mean, std, fmt="{:.3f}") -> str:
    if mean is None:
        return "-"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if std else "")


def _bytes(n) -> str:
    from transferlab.units import human_bytes

    return human_bytes(n)


def _points(x: float) -> str:
    return f"{100 * x:.1f} points"


def _metric_name(results: GridResults) -> str:
    """What the headline numbers are: test accuracy, or validation accuracy labelled as selected on."""
    return "test accuracy" if results.metric == "test_accuracy" else "validation accuracy (selected on)"


def _epoch(epochs: list) -> str:
    """The best epochs of a strategy's seeds: '3' when they agree, '2-4' (lowest-highest) when they differ."""
    values = sorted({round(e) for e in epochs if e is not None})
    if not values:
        return "-"
    return f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _split_n(results: GridResults, key: str) -> str:
    ns = [s.n.get(key) for s in results.summaries.values() if s.n.get(key)]
    return f", n={min(ns):,}" if ns else ""


# ---- built-in sections -----------------------------------------------------------------------------------
@register_section("table", order=10)
def table_section(ctx: ReportContext) -> Section:
    r = ctx.results
    has_test = any(s.mean.get("test_accuracy") is not None for s in r.summaries.values())
    # test accuracy leads: nothing was selected on it; validation accuracy picked each run's epoch
    headers = (["strategy", "runs"] + ([f"test accuracy{_split_n(r, 'test_accuracy')}"] if has_test else [])
               + [f"val accuracy (selected on{_split_n(r, 'val_accuracy')})", "trainable params", "share",
                  "train time (s)", "samples/s", "peak memory (MiB)", "task module", "best epoch"])
    rows = []
    for name in r.strategies:
        s = r.summaries[name]
        m, d = s.mean, s.std
        runs = f"{s.runs}" + (f" ({s.failed} failed)" if s.failed else "")
        if not s.runs:
            rows.append([name, runs] + ["failed" if s.failed else "not run"] + ["-"] * (len(headers) - 3))
            continue
        row = [name, runs] + ([_pm(m["test_accuracy"], d["test_accuracy"])] if has_test else [])
        row += [_pm(m["val_accuracy"], d["val_accuracy"]), f"{m['trainable_params']:,.0f}",
                f"{100 * m['trainable_share']:.1f}%",
                _pm(m["train_seconds"], d["train_seconds"], "{:.1f}"),
                _pm(m["samples_per_second"], d["samples_per_second"], "{:.1f}"),
                _pm(m["peak_memory_mb"], d["peak_memory_mb"], "{:.0f}"), _bytes(m["task_module_bytes"]),
                _epoch([run.values.get("best_epoch") for run in r.finished_runs(name)])]
        rows.append(row)
    seeds = r.grid["seeds"]
    selection = ("Each run keeps its best epoch by validation accuracy; test accuracy is measured once, on a split "
                 "nothing was selected on." if has_test else
                 "Each run keeps its best epoch by validation accuracy and reports that same accuracy, so it is "
                 "biased upwards (no test split: give the data one, or --test-fraction).")
    scratch_text = ""
    if r.scratch_choice:
        c = r.scratch_choice
        scratch_text = (f" `{SCRATCH}` is the same architecture trained from random weights: "
                        f"`{c['strategy']}`, BatchNorm statistics {c['recipe']['bn_stats']}, learning rate "
                        f"{c['recipe']['lr_scale']:g}x the grid's, {c['epochs']} epoch(s), the recipe chosen on "
                        "validation (below).")
    blocks = [Text(f"Model **{r.model}** on **{r.data}**; {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); "
                   f"mean ± std over seeds. {selection}{scratch_text}"),
              Table(headers, rows)]
    return Section("Results per strategy", blocks,
                   data={k: v.to_dict() for k, v in r.summaries.items()})


@register_section("reading", order=15)
def reading_section(ctx: ReportContext) -> Section | None:
    """Every flag and every "best" sentence here goes through `GridResults.compare` and `transferlab.stats` (one
    rule, stated in the report): a difference inside its noise band is reported as "within noise", never as a verdict."""
    r = ctx.results
    metric, mname = r.metric, _metric_name(r)
    ranked = sorted((s for s in r.summaries.values() if s.mean.get(metric) is not None),
                    key=lambda s: s.mean[metric], reverse=True)
    transfer = [s for s in ranked if s.strategy != SCRATCH]
    items, data = [], {"rule": stats.RULE}
    if transfer:
        best = transfer[0]
        data["best"] = best.strategy
        line = f"Best: **{best.strategy}** ({mname} {best.mean[metric]:.3f})"
        if len(transfer) > 1:
            # the best against each other strategy: one family, Holm-corrected
            others = [s.strategy for s in transfer[1:]]
            tests = stats.holm([r.compare(best.strategy, name) for name in others])
            diffs = dict(zip(others, tests))
            tied = [s for s in transfer[1:] if not diffs[s.strategy].significant]
            data["margin"] = diffs[transfer[1].strategy].estimate
            data["margin_interval"] = [diffs[transfer[1].strategy].low, diffs[transfer[1].strategy].high]
            data["not_separable_from"] = [s.strategy for s in tied]
            if tied:
                line += "; not separable from " + ", ".join(
                    f"{s.strategy} ({s.mean[metric]:.3f})" for s in tied) + " within noise"
            else:
                d = diffs[transfer[1].strategy]
                line += (f", ahead of {transfer[1].strategy} ({transfer[1].mean[metric]:.3f}) beyond noise: "
                         f"{d.text}")
        items.append(line + ".")
        # cheapest strategy that the best does not beat beyond noise
        near = [best] + [s for s in transfer[1:] if s.strategy in data.get("not_separable_from", [])]
        cheapest = min(near, key=lambda s: s.mean["trainable_params"])
        data["cheapest_near_best"] = cheapest.strategy
        if cheapest is best:
            items.append(f"No strategy with fewer trainable parameters is within noise of it; "
                         f"{best.strategy} trains {best.mean['trainable_params']:,.0f} parameters.")
        else:
            items.append(f"Cheapest within noise of the best: **{cheapest.strategy}** "
                         f"({cheapest.mean[metric]:.3f}) trains {cheapest.mean['trainable_params']:,.0f} "
                         f"parameters ({100 * cheapest.mean['trainable_share']:.1f}%) against "
                         f"{best.mean['trainable_params']:,.0f} for {best.strategy}.")
    over = [s for s in ranked if s.overfits]
    data["overfitting"] = [s.strategy for s in over]
    if over:
        items.append("Overfitting (train accuracy more than "
                     f"{_points(OVERFIT_THRESHOLD)} above validation accuracy in the selected epoch, beyond noise): "
                     + ", ".join(f"{s.strategy} (gap {_band(s.overfit_test)})" for s in over) + ".")
    elif ranked:
        items.append(f"No strategy overfits by more than {_points(OVERFIT_THRESHOLD)} beyond noise "
                     "(train minus validation accuracy of the selected epoch).")
    scratch = r.summaries.get(SCRATCH)
    if scratch is not None and scratch.mean.get(metric) is not None and transfer:
        sc = scratch.mean[metric]
        hurt = [s for s in transfer if s.transfer_hurt]
        helped = [s for s in transfer if s.vs_scratch and s.vs_scratch["significant"] and not s.transfer_hurt]
        noise = [s for s in transfer if s.vs_scratch and not s.vs_scratch["significant"]]
        data["transfer_hurt"] = [s.strategy for s in hurt]
        data["transfer_helped"] = [s.strategy for s in helped]
        data["transfer_within_noise"] = [s.strategy for s in noise]
        for s in hurt:
            items.append(f"**Transfer hurt** for {s.strategy}: scratch {sc:.3f} vs {s.mean[metric]:.3f}, "
                         f"difference {_band(s.vs_scratch)}.")
        for s in noise:
            items.append(f"{s.strategy} vs scratch: {s.mean[metric]:.3f} vs {sc:.3f}, within noise "
                         f"({s.strategy} minus scratch {_band(s.vs_scratch, sign=-1)}): neither transfer hurt nor "
                         "helped measurably.")
        if helped:
            items.append(f"Transfer helped beyond noise (scratch {sc:.3f}): " + ", ".join(
                f"{s.strategy} ({s.mean[metric]:.3f}, {_band(s.vs_scratch, sign=-1)})" for s in helped) + ".")
    failed = [s for s in r.summaries.values() if s.failed]
    if failed:
        items.append("Failed runs: " + "; ".join(f"{s.strategy}: {e}" for s in failed for e in s.errors) + ".")
    if not items:
        return None
    single = [name for name in r.strategies if r.summaries[name].runs == 1]
    if single:
        items.append("With one seed, a difference beyond noise separates two training runs, not two strategies: "
                     "the seed-to-seed spread is not measured, and equally good strategies often differ by more "
                     "than McNemar's test allows (docs/statistics.md). Compare strategies with --seeds 2 or more.")
    items.append(f"Noise rule: {stats.RULE}")
    return Section("Reading", [Bullets(items)], data=data)


def _band(diff: dict | None, sign: int = 1) -> str:
    """'+0.007 [-0.020, +0.034]' (the estimate and its 95% interval) from a stats.Comparison.to_dict();
    sign=-1 shows b - a."""
    if not diff:
        return "-"
    if diff["low"] is None or diff["high"] is None:  # the noise is unknown (a split size was not recorded)
        return f"{sign * diff['estimate']:+.3f} (no noise band: number of examples unknown)"
    low, high = sorted((sign * diff["low"], sign * diff["high"]))
    return f"{sign * diff['estimate']:+.3f} [{low:+.3f}, {high:+.3f}]"


@register_section("gaps", order=20)
def gaps_section(ctx: ReportContext) -> Section:
    r = ctx.results
    metric = r.metric
    rows, data = [], {}
    for name in r.strategies:
        s = r.summaries[name]
        if not s.runs:
            continue
        gap = s.negative_transfer_gap
        if gap is None:
            nt = "-"
        else:
            nt = _band(s.vs_scratch) + (" **transfer hurt**" if s.transfer_hurt
                                        else "" if s.vs_scratch["significant"] else " within noise")
        og = s.mean["overfit_gap"]
        og_text = "-" if og is None else _band(s.overfit_test) + (" **overfits**" if s.overfits else "")
        rows.append([name, nt, og_text])
        data[name] = {"negative_transfer_gap": gap, "negative_transfer_test": s.vs_scratch,
                      "transfer_hurt": s.transfer_hurt, "overfit_gap": og, "overfit_test": s.overfit_test,
                      "overfits": s.overfits}
    text = (f"Negative transfer gap (Wang et al. 2019): {_metric_name(r)} from scratch minus {_metric_name(r)} "
            "with transfer, with its 95% interval; flagged as transfer that hurt only when positive beyond noise "
            "(the noise rule under Reading, Holm-corrected over the strategies). Overfitting gap: train accuracy "
            "minus validation accuracy of the same (selected) epoch, "
            f"flagged above {OVERFIT_THRESHOLD:.2f} when also beyond noise.")
    if SCRATCH not in r.summaries:
        text += " The from-scratch baseline was not run (--no-scratch), so there is no transfer gap."
    data["metric"] = metric
    return Section("Transfer and overfitting gaps", [Text(text), Table(["strategy", "negative transfer gap",
                                                                       "overfitting gap"], rows)], data=data)


@register_section("scratch", order=25)
def scratch_section(ctx: ReportContext) -> Section | None:
    """How the from-scratch baseline was trained and chosen: every candidate recipe with its validation score."""
    c = ctx.results.scratch_choice
    if not c:
        return None
    rows = [[f"{row['recipe']['bn_stats']}", f"{row['recipe']['lr_scale']:g}x ({row['recipe']['lr_scale'] * c['base_lr']:g})",
             str(row["runs"]), _pm(row["val_accuracy"], row["val_accuracy_std"]),
             "**selected**" if row["selected"] else ""] for row in c["candidates"]]
    epochs = (f"{c['epochs']} epoch(s), as many as the pre-trained strategies" if c["epochs"] == c["grid_epochs"]
              else f"{c['epochs']} epoch(s) (--scratch-epochs; the pre-trained strategies had {c['grid_epochs']})")
    text = (f"The same architecture from random weights, every parameter at the base rate (`{c['strategy']}`: a "
            f"random backbone has nothing to protect), {epochs}. Its BatchNorm statistics mode and learning rate "
            f"were searched like a strategy's settings: {c['rule']}. A baseline given as few epochs as a "
            "fine-tune is still a weak one: give it more with --scratch-epochs.")
    return Section("The from-scratch baseline", [Text(text), Table(
        ["BatchNorm statistics", "learning rate", "runs", "val accuracy", ""], rows)], data=c)


@register_section("learning_curves", order=30)
def learning_curves_section(ctx: ReportContext) -> Section:
    from transferlab.compare.plots import learning_curves

    return Section("Learning curves", [Figure("learning_curves", learning_curves(ctx.results),
                                              "Train and validation loss per epoch, one panel per strategy "
                                              "(one line pair per seed).")])


@register_section("cost", order=40)
def cost_section(ctx: ReportContext) -> Section:
    from transferlab.compare.plots import accuracy_vs_params, accuracy_vs_time

    m = _metric_name(ctx.results)
    return Section("Accuracy against cost", [
        Figure("accuracy_vs_params", accuracy_vs_params(ctx.results),
               f"{m} against trainable parameters (log scale), mean ± std over seeds."),
        Figure("accuracy_vs_time", accuracy_vs_time(ctx.results), f"{m} against training time.")])


@register_section("weight_change", order=60)
def weight_change_section(ctx: ReportContext) -> Section | None:
    from transferlab.compare.drift import weight_change
    from transferlab.compare.plots import weight_change_plot

    r = ctx.results
    changes: dict[str, list] = {}
    notes, groups = [], None
    for name in r.strategies:
        per_seed = []
        for run in r.finished_runs(name):
            try:
                wc = weight_change(run.run_dir)
            except Exception as exc:  # a diagnostic must not sink the report
                notes.append(f"{name} (seed {run.seed}): not computed ({type(exc).__name__}: {exc})")
                continue
            if wc.note:
                notes.append(f"{name}: {wc.note}")
                break
            groups = groups or wc.groups
            if wc.groups == groups:
                per_seed.append(wc.change)
        if per_seed:
            changes[name] = [None if any(v[i] is None for v in per_seed) else sum(v[i] for v in per_seed) / len(per_seed)
                             for i in range(len(groups))]
    if not changes:
        return Section("Weight change per depth group", [Text("Not computed: " + ("; ".join(notes) or "no runs"))])
    blocks = [Figure("weight_change", weight_change_plot(changes, groups),
                     "Relative weight change ||w - w0|| / ||w0|| per depth group (mean over seeds): w0 is the "
                     "pre-trained model (for scratch, its random init). The new head has no w0 and is left out.")]
    table_groups = [i for i, g in enumerate(groups) if any(v[i] is not None for v in changes.values())]
    rows = [[groups[i]] + ["-" if changes[n][i] is None else f"{changes[n][i]:.4f}" for n in changes]
            for i in table_groups]
    blocks.append(Table(["depth group"] + list(changes), rows, css_class="small"))
    if notes:
        blocks.append(Bullets(notes))
    return Section("Weight change per depth group", blocks,
                   data={"groups": groups, "change": changes, "notes": notes})


@register_section("runs", order=90)
def runs_section(ctx: ReportContext) -> Section:
    rows = []
    for run in ctx.results.runs:
        v = run.values
        if run.status == "finished":
            test = "-" if v["test_accuracy"] is None else f"{v['test_accuracy']:.4f}"
            rows.append([run.strategy, str(run.seed), run.status, f"{v['val_accuracy']:.4f}", test,
                         f"{v['final_train_accuracy']:.4f}", _acc4(v.get("best_epoch_train_accuracy")),
                         f"{v['train_seconds']:.1f}", _epoch([v["best_epoch"]]), run.run_dir])
        else:
            rows.append([run.strategy, str(run.seed), run.status + (f": {run.error}" if run.error else ""),
                         "-", "-", "-", "-", "-", "-", run.run_dir])
    return Section("Every run", [Table(["strategy", "seed", "status", "val acc", "test acc", "final train acc",
                                        "train acc (best epoch)", "train s", "best epoch", "run directory"], rows,
                                       css_class="small")])


def _acc4(x) -> str:
    return "-" if x is None else f"{x:.4f}"


# ---- rendering -------------------------------------------------------------------------------------------
# The report's time, stated for the estimate before its first section is timed: about half the grid's training
# time (docs/benchmarks.md: 11 runs in 1,118 s, the report 566 s more; its CKA, forgetting and BatchNorm sections
# evaluate every run's model again), spread evenly over the sections.
REPORT_PER_RUN = 0.5


def report_weight(runs: int, sections: int) -> float:
    """One section's cost in runs (transferlab.progress weights): REPORT_PER_RUN x runs over the sections."""
    return REPORT_PER_RUN * max(runs, 1) / max(sections, 1)


def add_report_phase(progress: Progress, runs: int) -> None:
    """Declare the report's sections as work units of `progress`, after a grid of `runs` runs."""
    n = len(list_sections())
    progress.add("report", n, weight=report_weight(runs, n))


def build_sections(ctx: ReportContext, progress: Progress | None = None) -> dict[str, Section]:
    """Every registered section, in order; `progress` gets one unit per section (and logs which one runs)."""
    out = {}
    keys = list_sections()
    if progress is not None and "report" not in progress.phases:
        progress.add("report", len(keys))
    for i, key in enumerate(keys):
        if progress is not None:
            progress.start("report")
            progress.note(f"report: section {i + 1}/{len(keys)} ({key})", logger)
        try:
            section = _SECTIONS[key][1](ctx)
        except Exception as exc:
            logger.exception("report section %s failed", key)
            section = Section(key, [Text(f"This section could not be made: {type(exc).__name__}: {exc}")])
        if section is not None:
            out[key] = section
        if progress is not None:
            progress.finish("report")
    return out


def _md_escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _title(results: GridResults | None, title: str | None) -> str:
    return title or f"Strategy comparison: {results.model} on {results.data}"


def render_markdown(results: GridResults | None, sections: dict[str, Section], title: str | None = None,
                    footer: str | None = None) -> str:
    """The report as Markdown (figures under plots/); `title` and `footer` replace a grid's (the transfer curve)."""
    lines = [f"# {_title(results, title)}", ""]
    for section in sections.values():
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Bullets):
                lines += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_md_escape_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif isinstance(block, Figure):
                lines += [f"![{block.caption}](plots/{block.name}.png)", "", f"*{block.caption}*", ""]
    lines.append(footer or "Numbers: results.json, results.csv (per strategy) and runs.csv (per run); each run's "
                 "own metrics.json under runs/.")
    return "\n".join(lines) + "\n"


def _inline_html(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
table.small{font-size:0.8em}img{max-width:100%;height:auto}figcaption{font-size:0.85em;color:#555}"""

# Records, once the page has loaded, each image's natural width (0: it did not decode) on the image, and a
# readiness flag on <body>: readable by a headless browser's --dump-dom (the report test uses this).
_SCRIPT = """<script>window.addEventListener('load',function(){var imgs=document.images;
for(var i=0;i<imgs.length;i++){imgs[i].setAttribute('data-natural-width',String(imgs[i].naturalWidth));}
document.body.setAttribute('data-report-ready','1');});</script>"""


def render_html(results: GridResults | None, sections: dict[str, Section], title: str | None = None) -> str:
    title = html.escape(_title(results, title))
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{title}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{title}</h1>"]
    for key, section in sections.items():
        parts.append(f"<section id='{html.escape(key)}'><h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{_inline_html(block.text)}</p>")
            elif isinstance(block, Bullets):
                parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
                body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                               for row in block.rows)
                parts.append(f"<table class='{block.css_class}'><thead><tr>{head}</tr></thead>"
                             f"<tbody>{body}</tbody></table>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' data-name='{block.name}' "
                             f"src='data:image/png;base64,{data}'><figcaption>{html.escape(block.caption)}"
                             "</figcaption></figure>")
        parts.append("</section>")
    parts += [_SCRIPT, "</body></html>"]
    return "\n".join(parts) + "\n"


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def summary_csv(results: GridResults) -> str:
    header = ["strategy", "runs", "failed"] + [f"{k}_{stat}" for k in SUMMARY_FIELDS for stat in ("mean", "std")] \
        + ["negative_transfer_gap", "transfer_hurt", "overfits"]
    rows = []
    for name in results.strategies:
        s = results.summaries[name]
        rows.append([name, s.runs, s.failed] + [_num(d.get(k)) for k in SUMMARY_FIELDS for d in (s.mean, s.std)]
                    + [_num(s.negative_transfer_gap), s.transfer_hurt, s.overfits])
    return _csv_text(header, rows)


def runs_csv(results: GridResults) -> str:
    keys = list(SUMMARY_FIELDS) + ["val_loss"]
    header = ["strategy", "seed", "status", "error"] + keys + ["run_dir"]
    rows = [[r.strategy, r.seed, r.status, r.error or ""] + [_num(r.values.get(k)) for k in keys] + [r.run_dir]
            for r in results.runs]
    return _csv_text(header, rows)


def _num(x):
    return "" if x is None else repr(x) if isinstance(x, float) else x


def write_report(results: GridResults, source_data: str | None = None,
                 contamination: str | None = None, progress: Progress | None = None) -> dict[str, Path]:
    """Write report.md (+ plots/*.png), report.html, results.json, results.csv, runs.csv, all atomically.
    `source_data`: source-task data for the forgetting section where a run has none of its own;
    `contamination`: a `transferlab contamination` folder of the test split, for the contamination section;
    `progress`: the grid's (compare), whose time left then counts the sections; by default one of their own."""
    out = Path(results.out)
    ctx = ReportContext(results, out, source_data=source_data, contamination=contamination)
    logger.info("writing the report to %s (%d sections)", out, len(_SECTIONS))
    own = progress is None
    progress = progress or Progress(logger)
    try:
        sections = build_sections(ctx, progress)
    finally:
        if own:
            progress.close()
    for section in sections.values():
        for block in section.blocks:
            if isinstance(block, Figure):
                atomic_write_bytes(out / "plots" / f"{block.name}.png", block.png)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "results.json",
             "csv": out / "results.csv", "runs_csv": out / "runs.csv"}
    atomic_write_text(paths["markdown"], render_markdown(results, sections))
    atomic_write_text(paths["html"], render_html(results, sections))
    atomic_write_json(paths["json"], {**results.to_dict(),
                                      "sections": {k: s.data for k, s in sections.items() if s.data is not None}})
    atomic_write_text(paths["csv"], summary_csv(results))
    atomic_write_text(paths["runs_csv"], runs_csv(results))
    return paths
