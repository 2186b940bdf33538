"""The ranking's folder: ranking.json (the numbers), ranking.md (with plots/*.png beside it) and ranking.html (one
self-contained file, the PNGs embedded), rendered as the comparison report renders its sections
(`compare.report.render_markdown` / `render_html`)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from transferlab import stats
from transferlab.compare.report import render_html, render_markdown
from transferlab.figures import new_figure, png_bytes
from transferlab.outputs import FolderKind
from transferlab.ranking.rank import RANKING_FORMAT, RankingResult
from transferlab.safe_io import atomic_write_bytes, atomic_write_json, atomic_write_text
from transferlab.sections import Bullets, Figure, Section, Table, Text

logger = logging.getLogger(__name__)

PLOTS = frozenset({"scores.png", "time.png"})
# A ranking (rank --out): ranking.json marks it and is written last. No residue: a folder is a ranking's only by its
# ranking.json (a user's own ranking.md is theirs), as a contamination check's is by its summary.json.
RANKING_FOLDER = FolderKind(name="ranking", marker="ranking.json", formats=frozenset({RANKING_FORMAT}),
                            files=frozenset({"ranking.json", "ranking.md", "ranking.html"}), folders={"plots": PLOTS})


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _cell(result, metric: str) -> str:
    m = result.metrics[metric]
    return f"skipped ({m.note})" if m.score is None else f"{m.score:.4f} (#{m.rank})"


def summary_rows(result: RankingResult) -> tuple[list[str], list[list[str]]]:
    """The one-line-per-candidate table (stdout and the report's first table)."""
    names = [m["name"] for m in result.metrics]
    headers = ["candidate", "features"] + names + ["forward (s)", "metrics (s)"]
    rows = [[c.name, "x".join(map(str, c.features_shape))] + [_cell(c, n) for n in names]
            + [f"{c.forward_seconds:.2f}", f"{c.metric_seconds:.2f}"] for c in result.candidates]
    return headers, rows


def _what(result: RankingResult) -> str:
    unit = "depth groups of one model" if result.layers else "candidates"
    return (f"{len(result.candidates)} {unit} on **{result.data}**: {result.examples} examples of the training split "
            f"({result.examples_available} available; a stratified subsample, seed {result.seed}), "
            f"{len(result.classes)} classes, on {result.device}. Each metric: higher is better; #1 is its best.")


def _firsts(result: RankingResult) -> str:
    """Which candidate each metric ranks first, over the metrics that scored at least two candidates."""
    scored = [m["name"] for m in result.metrics
              if sum(c.metrics[m["name"]].score is not None for c in result.candidates) >= 2]
    tops = {name: [c.name for c in result.ranking(name) if c.metrics[name].rank == 1] for name in scored}
    distinct = {tuple(v) for v in tops.values()}
    if not tops:
        return "No metric scored two candidates or more: nothing to rank."
    if len(distinct) == 1:
        return (f"Every metric that scored two candidates or more ({', '.join(tops)}) ranks "
                f"**{', '.join(next(iter(distinct)))}** first.")
    return "First by metric: " + "; ".join(f"{k}: **{', '.join(v)}**" for k, v in tops.items()) + "."


def summary_section(result: RankingResult) -> Section:
    headers, rows = summary_rows(result)
    return Section("Ranking", [Text(_what(result)), Text(_firsts(result)), Table(headers, rows)])


def metric_section(result: RankingResult, metric: dict) -> Section:
    name = metric["name"]
    rows = []
    for c in result.ranking(name):
        m = c.metrics[name]
        rows.append(["-" if m.rank is None else str(m.rank), c.name,
                     _num(m.score) if m.score is not None else f"skipped: {m.note}", f"{m.seconds:.2f}"])
    return Section(f"{name}: {metric['paper']}", [Text(metric["help"] + "."),
                                                  Table(["rank", "candidate", name, "time (s)"], rows)])


def accuracy_section(result: RankingResult) -> Section | None:
    """For the accuracy metrics (kNN, linear): the first candidate against each other one, McNemar's exact test on
    the same examples, Holm over all of them (`transferlab.stats`): is the lead beyond noise?"""
    pairs = []
    for metric in result.metrics:
        if not metric["accuracy"]:
            continue
        ranked = [c for c in result.ranking(metric["name"]) if c.metrics[metric["name"]].correct is not None]
        for other in ranked[1:]:
            first = ranked[0]
            comparison = stats.mcnemar(first.metrics[metric["name"]].correct, other.metrics[metric["name"]].correct)
            pairs.append((metric["name"], first.name, other.name, comparison))
    if not pairs:
        return None
    adjusted = stats.holm([p[3] for p in pairs])
    rows = [[name, a, b, c.band, c.verdict] for (name, a, b, _), c in zip(pairs, adjusted)]
    return Section("Accuracy metrics: is the lead beyond noise?", [
        Text("The accuracy metrics score each example as right or wrong, on the same examples for every candidate, "
             f"so the first is compared with each other one: accuracy difference [95% interval]. Rule: {stats.RULE}."),
        Table(["metric", "first", "against", "difference", "verdict"], rows)],
        data={"comparisons": [{"metric": p[0], "first": p[1], "against": p[2], **c.to_dict()}
                              for p, c in zip(pairs, adjusted)]})


def scores_figure(result: RankingResult) -> bytes:
    names = [m["name"] for m in result.metrics]
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = new_figure(rows, cols, figsize=(4.2 * cols, 0.6 + 0.45 * max(2, len(result.candidates)) * rows),
                           squeeze=False)
    labels = [c.name for c in result.candidates]
    for ax, name in zip(axes.ravel(), names):
        values = [c.metrics[name].score for c in result.candidates]
        y = np.arange(len(labels))
        colours = ["#1f77b4" if c.metrics[name].rank == 1 else "#9ecae1" for c in result.candidates]
        ax.barh(y, [0.0 if v is None else v for v in values], color=colours)
        for yi, v in zip(y, values):
            if v is None:
                ax.text(0, yi, " skipped", va="center", fontsize=8, color="#777")
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.axvline(0, color="#444", linewidth=0.6)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    return png_bytes(fig)  # laid out by bbox_inches="tight"; tight_layout warns on long candidate names


def time_section(result: RankingResult) -> Section:
    names = [m["name"] for m in result.metrics]
    rows = [[c.name, f"{c.forward_seconds:.2f}"] + [f"{c.metrics[n].seconds:.2f}" for n in names]
            + [f"{c.forward_seconds + c.metric_seconds:.2f}", f"{c.peak_memory_mb:.0f}"] for c in result.candidates]
    memory = ("peak memory: CUDA memory allocated during the pass" if result.device.startswith("cuda") else
              "peak memory: the process's peak resident set so far (on the CPU it only grows, candidate by candidate)")
    fig, ax = new_figure(figsize=(6.5, 0.8 + 0.4 * max(2, len(result.candidates))))
    y = np.arange(len(result.candidates))
    left = np.zeros(len(result.candidates))
    for label, values in [("forward pass", [c.forward_seconds for c in result.candidates])] + [
            (n, [c.metrics[n].seconds for c in result.candidates]) for n in names]:
        ax.barh(y, values, left=left, label=label)
        left += np.asarray(values)
    ax.set_yticks(y, [c.name for c in result.candidates], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7, loc="lower right")
    return Section("Time per candidate", [
        Text(f"Seconds per candidate: its one forward pass (data reading included) and each metric; {memory}."),
        Table(["candidate", "forward"] + names + ["total", "peak memory (MiB)"], rows),
        Figure("time", png_bytes(fig), "Seconds per candidate: the forward pass and each metric")])


def reading_section(result: RankingResult) -> Section:
    return Section("How to read it", [Bullets([
        "Compare scores within one metric and one data set only: LogME and LEEP are log-likelihoods per example, "
        "NCE a negative entropy, the H-score a trace whose scale grows with the feature width, kNN and linear "
        "accuracies on the sampled training examples.",
        "LEEP and NCE read the source head (the pre-trained classifier) and say how well its source classes "
        "predict the target's; a candidate without one (a random init, a backbone without its classifier) is "
        "skipped, not scored low.",
        "A ranking estimates which start fine-tunes best; it is no measurement of it. Where the metrics disagree, "
        "or the lead of an accuracy metric is within noise, fine-tune the top few (`transferlab compare`).",
        "With --layers the rows are one model's depth groups: which layer's output to transfer from.",
    ])])


def build_sections(result: RankingResult) -> dict[str, Section]:
    sections = {"ranking": summary_section(result)}
    sections["scores"] = Section("Scores per candidate", [Figure("scores", scores_figure(result),
                                                                 "Each metric's score per candidate (dark: first)")])
    for metric in result.metrics:
        sections[f"metric-{metric['name']}"] = metric_section(result, metric)
    accuracy = accuracy_section(result)
    if accuracy is not None:
        sections["accuracy"] = accuracy
    sections["time"] = time_section(result)
    sections["reading"] = reading_section(result)
    return sections


def title(result: RankingResult) -> str:
    what = f"the layers of {result.candidates[0].model}" if result.layers and result.candidates else "pre-trained models"
    return f"Ranking {what} for {result.data}"


def write_ranking(result: RankingResult, out: str | Path) -> dict[str, Path]:
    """Write plots/*.png, ranking.md, ranking.html and, last, ranking.json (the folder's marker) into `out`."""
    out = Path(out)
    sections = build_sections(result)
    for section in sections.values():
        for block in section.blocks:
            if isinstance(block, Figure):
                atomic_write_bytes(out / "plots" / f"{block.name}.png", block.png)
    paths = {"markdown": out / "ranking.md", "html": out / "ranking.html", "json": out / "ranking.json"}
    atomic_write_text(paths["markdown"], render_markdown(None, sections, title=title(result),
                                                         footer="Numbers: ranking.json (per candidate: scores, "
                                                                "ranks, features' shape, times, memory)."))
    atomic_write_text(paths["html"], render_html(None, sections, title=title(result)))
    atomic_write_json(paths["json"], {**result.to_dict(),
                                      "sections": {k: s.data for k, s in sections.items() if s.data is not None}})
    logger.info("ranking written to %s", out)
    return paths
