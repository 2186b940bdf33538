"""Figures without global state: matplotlib's Figure and its Agg canvas, never pyplot or `matplotlib.use`, so a
library call leaves a notebook's backend and open figures as they were."""
from __future__ import annotations

import io
from pathlib import Path


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4), **subplot_kw):
    """(figure, axes) as pyplot.subplots would give them, outside pyplot's figure registry."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def png_bytes(fig, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_png(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out and write a figure as PNG (making the folder)."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
