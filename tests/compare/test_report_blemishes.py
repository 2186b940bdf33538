"""The report's small blemishes, fixed: labels of strategies at the same parameter count do not overlap in the
accuracy-against-parameters plot, and the best epoch is an integer (or a range), never "2.0"."""
from __future__ import annotations

from itertools import combinations
from types import SimpleNamespace

from matplotlib.backends.backend_agg import FigureCanvasAgg

from transferlab.compare.plots import scatter_figure
from transferlab.compare.report import _epoch


def _results(points: dict[str, tuple[float, float]]):
    """A GridResults as the scatter reads it: strategy -> (trainable params, val accuracy)."""
    summaries = {name: SimpleNamespace(mean={"trainable_params": x, "val_accuracy": y},
                                       std={"trainable_params": 0.0, "val_accuracy": 0.01})
                 for name, (x, y) in points.items()}
    return SimpleNamespace(metric="val_accuracy", strategies=list(points), summaries=summaries)


def _label_boxes(fig):
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.axes[0]
    return {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}


def test_strategies_at_the_same_parameter_count_get_labels_that_do_not_overlap():
    # l2sp, full and lp_ft train every parameter: one count, accuracies within a label's height
    fig = scatter_figure(_results({"linear_probe": (3_000, 0.80), "l2sp": (1_000_000, 0.900),
                                   "full": (1_000_000, 0.902), "lp_ft": (1_000_000, 0.899)}),
                         "trainable_params", "trainable parameters", logx=True)
    boxes = _label_boxes(fig)
    assert set(boxes) == {"linear_probe", "l2sp", "full", "lp_ft"}
    for (a, box_a), (b, box_b) in combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"


def test_strategies_at_the_same_point_share_one_label():
    fig = scatter_figure(_results({"freeze": (5_000, 0.85), "bitfit": (5_000, 0.85), "full": (10_000, 0.9)}),
                         "trainable_params", "trainable parameters", logx=True)
    assert sorted(_label_boxes(fig)) == ["freeze, bitfit", "full"]


def test_best_epoch_is_an_integer_when_the_seeds_agree_and_a_range_when_not():
    assert _epoch([2, 2, 2]) == "2"
    assert _epoch([2.0]) == "2"  # metrics.json may hold it as a float: never "2.0"
    assert _epoch([3, 1, 2]) == "1-3"  # mean 2.0: not "2.0 ± 1.0"
    assert _epoch([2, 3]) == "2-3"
    assert _epoch([]) == "-" and _epoch([None]) == "-"


def test_the_results_table_shows_the_best_epoch_of_the_seeds(grid_dir):
    """The tiny grid (conftest): 2 epochs, so every best epoch is 1 or 2 (or a range), none with a decimal."""
    table = (grid_dir / "report.md").read_text().split("## ", 2)[1]
    header = next(line for line in table.splitlines() if line.startswith("| strategy"))
    column = [c.strip() for c in header.strip("|").split("|")].index("best epoch")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    values = {[c.strip() for c in row.strip("|").split("|")][column] for row in rows}
    assert values and values <= {"1", "2", "1-2", "-"}, values
