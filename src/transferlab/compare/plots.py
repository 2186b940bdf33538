"""The report's figures, as PNG bytes (matplotlib, no display needed)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from transferlab.figures import new_figure, png_bytes

from transferlab.compare.results import GridResults


to_png = png_bytes


def _history(run_dir: str) -> list[dict]:
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def learning_curves(results: GridResults) -> bytes:
    """Train and validation loss per epoch, one panel per strategy, one line pair per seed."""
    names = results.strategies
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = new_figure(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names):
        runs = [r for r in results.runs if r.strategy == name]
        drawn = False
        for i, run in enumerate(runs):
            hist = _history(run.run_dir)
            if not hist:
                continue
            epochs = [h["epoch"] for h in hist]
            ax.plot(epochs, [h["train_loss"] for h in hist], "-o", color="C0", ms=3, alpha=0.8,
                    label="train" if i == 0 else None)
            ax.plot(epochs, [h["val_loss"] for h in hist], "-s", color="C1", ms=3, alpha=0.8,
                    label="validation" if i == 0 else None)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no finished epoch", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("loss")
    fig.suptitle("Learning curves (cross-entropy)", fontsize=10)
    fig.tight_layout()
    return to_png(fig)


def _scatter(results: GridResults, xkey: str, xlabel: str, logx: bool) -> bytes:
    return to_png(scatter_figure(results, xkey, xlabel, logx))


def scatter_figure(results: GridResults, xkey: str, xlabel: str, logx: bool):
    """One point per strategy (mean, std bars over seeds), each named; strategies at the same point share one
    label ("a, b"), and labels that would overlap (same parameter count, close accuracy) are moved apart."""
    fig, ax = new_figure(figsize=(6, 4))
    metric = results.metric
    at: dict[tuple[float, float], list[str]] = {}
    for i, name in enumerate(results.strategies):
        s = results.summaries[name]
        x, y = s.mean.get(xkey), s.mean.get(metric)
        if x is None or y is None or (logx and x <= 0):
            continue
        ax.errorbar([x], [y], yerr=[s.std.get(metric) or 0.0], xerr=[s.std.get(xkey) or 0.0], fmt="o",
                    color=f"C{i % 10}", capsize=3, label=name)
        at.setdefault((x, y), []).append(name)
    labels = [ax.annotate(", ".join(names), xy, textcoords="offset points", xytext=(5, 4), fontsize=7)
              for xy, names in at.items()]
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    _separate(fig, labels)
    return fig


def _separate(fig, labels: list, gap_px: float = 1.0) -> None:
    """Move labels up, lowest first, until no label's box overlaps one placed before it (display space)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    placed = []
    for label in sorted(labels, key=lambda t: (t.xy[1], t.xy[0])):
        for _ in range(len(labels) + 1):  # each move clears one box; at most one per box placed
            box = label.get_window_extent(renderer)
            hit = next((b for b in placed if b.overlaps(box)), None)
            if hit is None:
                break
            dx, dy = label.xyann  # offset in points
            label.xyann = (dx, dy + (hit.y1 - box.y0 + gap_px) * 72 / fig.dpi)
        placed.append(label.get_window_extent(renderer))


def accuracy_vs_params(results: GridResults) -> bytes:
    return _scatter(results, "trainable_params", "trainable parameters (log scale)", logx=True)


def accuracy_vs_time(results: GridResults) -> bytes:
    return _scatter(results, "train_seconds", "training time (s)", logx=False)


def weight_change_plot(changes: dict[str, "list[float | None]"], groups: list[str]) -> bytes:
    """Relative weight change per depth group, one line per strategy (log scale when the range is wide)."""
    fig, ax = new_figure(figsize=(max(6, 0.45 * len(groups) + 2), 4))
    positive = []
    for i, (name, values) in enumerate(changes.items()):
        xs = [j for j, v in enumerate(values) if v is not None]
        ys = [values[j] for j in xs]
        positive += [y for y in ys if y > 0]
        ax.plot(xs, ys, "-o", ms=3, color=f"C{i % 10}", label=name)
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("symlog", linthresh=min(positive))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("||w - w0|| / ||w0||")
    ax.set_xlabel("depth group (input side -> output side)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_png(fig)
