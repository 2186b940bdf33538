"""The time left (transferlab.progress) counts all the remaining work, the report's sections included; log lines
off a terminal, a bar on one."""
from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest

from tests.compare.conftest import LogLines, grid_args
from transferlab.compare.grid import Cell, CellResult, GridProgress
from transferlab.compare.report import REPORT_PER_RUN, add_report_phase
from transferlab.progress import PSEUDO, Progress
from transferlab.sections import list_sections


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _seconds(line: str) -> float:
    m = re.search(r"about (?:(\d+) min )?(\d+) s left", line)
    assert m, line
    return 60 * int(m.group(1) or 0) + int(m.group(2))


def test_after_k_of_n_equal_units_the_estimate_is_n_minus_k_times_their_mean():
    clock = Clock()
    progress = Progress(logging.getLogger("test.progress"), bar=False, clock=clock)
    progress.add("unit", 5)
    assert progress.left() is None  # nothing timed, no guess: no made-up time
    took = [10.0, 20.0, 30.0, 40.0]
    for k in range(1, len(took) + 1):
        progress.start("unit")
        clock.t += took[k - 1]
        progress.finish()
        assert progress.left() == pytest.approx((5 - k) * sum(took[:k]) / k)
    progress.start("unit")
    progress.advance(0.5)  # half of the last unit done (its epochs)
    assert progress.left() == pytest.approx(0.5 * 25.0)
    clock.t += 50
    progress.finish()
    assert progress.left() == 0.0


def test_the_last_run_no_longer_says_0_s_while_report_sections_remain(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="transferlab.compare.grid")
    progress = Progress(logging.getLogger("transferlab.compare.grid"), bar=False, clock=clock)
    add_report_phase(progress, runs=3)
    grid = GridProgress(3, progress=progress)
    for i in range(3):
        cell = Cell("full", i, Path(f"runs/full/{i}"), None)
        grid.start(i, cell)
        grid.done(CellResult(cell, "finished", seconds=10.0))
    last = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run 3/3: full (seed 2) finished")]
    # the report is guessed at REPORT_PER_RUN of the 3 runs' 30 s, before any of its sections was timed
    assert _seconds(last[0]) == round(REPORT_PER_RUN * 30) > 0
    # the report's sections, timed: each estimate draws the guess towards the sections' own mean
    n = len(list_sections())
    guess = REPORT_PER_RUN * 30 / n
    for k in range(1, n + 1):
        progress.start("report")
        clock.t += 0.5
        progress.finish("report")
        per_section = (0.5 * k + PSEUDO * guess) / (k + PSEUDO)
        assert progress.left() == pytest.approx((n - k) * per_section)
    assert progress.left() == 0.0


def test_without_a_terminal_it_logs_lines_and_on_one_it_draws_a_bar(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    log = logging.getLogger("test.progress")
    clock = Clock()
    plain = io.StringIO()
    with Progress(log, stream=plain, clock=clock) as progress:
        assert not progress.drawing
        progress.add("step", 2)
        progress.start("step")
        clock.t += 4
        progress.finish()
        progress.note("step 1/2")
    assert [r.getMessage() for r in caplog.records] == ["step 1/2 | about 4 s left"]
    assert plain.getvalue() == ""
    caplog.clear()
    tty = TTY()
    with Progress(log, stream=tty, clock=clock) as progress:
        assert progress.drawing
        progress.add("step", 2)
        progress.start("step")
        clock.t += 4
        progress.finish()
        progress.note("step 1/2")
    drawn = tty.getvalue()
    assert "1/2" in drawn and "step 1/2 | about 4 s left" in drawn and "\r" in drawn
    assert caplog.records == []  # drawn, not logged


def test_a_tiny_compare_logs_the_report_sections_to_the_last(tmp_path, tiny_weights):
    from transferlab.cli import main

    handler, top = LogLines(), logging.getLogger("transferlab")
    level = top.level
    top.addHandler(handler)
    top.setLevel(logging.INFO)
    try:
        assert main(grid_args(tmp_path / "out", tiny_weights, "linear_probe", "--no-scratch")) == 0
    finally:
        top.removeHandler(handler)
        top.setLevel(level)
    n = len(list_sections())
    runs = [line for line in handler.lines if re.match(r"run 1/1: linear_probe .*finished in", line)]
    assert runs and "left" in runs[0], runs  # the report's sections still to come
    sections = [line for line in handler.lines if line.startswith("report: section")]
    assert [re.match(r"report: section (\d+)/(\d+)", line).groups() for line in sections] == \
        [(str(k), str(n)) for k in range(1, n + 1)]
    assert sections[-1].startswith(f"report: section {n}/{n} ({list_sections()[-1]})")
    assert all("left" in line for line in sections)


def test_lab_run_all_estimates_from_the_labs_stated_minutes_until_one_was_timed():
    from transferlab.labs.base import Lab
    from transferlab.labs.runner import _stated_minutes

    lab = Lab(name="x", title="x", claim="x", data="x", minutes=30, quick_minutes=2, run=lambda ctx: None)
    assert _stated_minutes(lab, quick=True, seeds=2) == 2 and _stated_minutes(lab, quick=False, seeds=6) == 60
    clock = Clock()
    progress = Progress(logging.getLogger("test.progress"), bar=False, clock=clock)
    progress.add("a", 1, weight=2, prior=120)
    progress.add("b", 1, weight=6, prior=360)
    assert progress.left() == pytest.approx(480)  # the stated 2 + 6 minutes
    progress.start("a")
    clock.t += 60  # lab a took half its stated time: b is expected to as well
    progress.finish()
    assert progress.left() == pytest.approx(180)


def test_contamination_logs_images_with_the_time_left(caplog):
    from transferlab.contamination.check import _progress

    caplog.set_level(logging.INFO, logger="transferlab.contamination.check")
    report = _progress("source")
    report(100, 400)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("source: 100 / 400 images |") and line.endswith("left")
