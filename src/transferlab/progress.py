"""Progress through work of several phases (the grid's runs, then the report's sections), with the time left
estimated over ALL of it, drawn as a bar on a terminal and logged as lines elsewhere.

    progress = Progress(logger)
    progress.add("run", 10, parallel=jobs)       # 10 runs, `jobs` at a time
    progress.add("report", 13, weight=0.2)       # a section guessed at 0.2 of a run until one was timed
    progress.start("run"); ...; progress.advance(0.5); progress.note("run 1/10: full epoch 1/2")
    progress.finish("run")                       # "run 1/10: ... | about 4 min 10 s left" (report included)

The time of one unit of a phase, estimated from (Phase.per_unit):
- the mean time of its units done so far (in this process; units skipped, e.g. resumed runs, are not timed),
- drawn towards a guess, which counts as PSEUDO units: its `weight` x the seconds per unit of weight timed in the
  other phases (the caller's stated relative cost, e.g. a report section = a fraction of a run), else its
  `prior` in seconds (e.g. a lab's stated minutes);
- when there is neither a timed unit nor a guess: nothing, and the line says no time rather than a made-up one.
Phases with `parallel` > 1 divide their remaining time by it. Below every layer: imports nothing of transferlab.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

_logger = logging.getLogger(__name__)


PSEUDO = 2  # units a guess counts as, next to a phase's timed ones (Phase.per_unit)


@dataclass
class Phase:
    name: str
    total: int
    weight: float = 1.0  # cost of one unit relative to the other phases' units
    parallel: int = 1  # units done at once
    prior: float | None = None  # seconds per unit, the guess when no other phase was timed
    done: int = 0  # units finished, timed or not
    timed: int = 0  # units finished with a time
    seconds: float = 0.0  # their summed time

    def per_unit(self, rate: float | None) -> float | None:
        """Seconds one unit takes (None when nothing is known): the mean of the timed units, drawn towards the
        guess (weight x rate of the other phases, else the prior) as if the guess were PSEUDO units more; so one
        quick unit (the report's table) does not make the rest look free, and many timed units outweigh it."""
        guess = self.weight * rate if rate is not None else self.prior
        if guess is None:
            return self.seconds / self.timed if self.timed else None
        return (self.seconds + PSEUDO * guess) / (self.timed + PSEUDO)


class Progress:
    """Weighted work units in phases; `note(text)` logs (or draws) `text | about X left`.

    `stream` (stderr) decides the form: a TTY gets a tqdm bar, anything else log lines through `log`;
    `bar` forces one or the other. `clock` is injectable for tests."""

    def __init__(self, log: logging.Logger | None = None, stream: TextIO | None = None, bar: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.log = log or _logger
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.phases: dict[str, Phase] = {}
        self.current: str | None = None  # the phase of the unit in progress
        self.fraction = 0.0  # how much of that unit is done
        self.unit_started = clock()
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty()) and self.log.isEnabledFor(logging.INFO)
        self._draw = bar  # drawn from the first note on, so that work refused before it leaves no empty bar
        self._bar = None
        self._redirect = None

    # ---- the work --------------------------------------------------------------------------------------------
    def add(self, name: str, total: int, weight: float = 1.0, parallel: int = 1,
            prior: float | None = None) -> Phase:
        """Declare (or re-size) a phase of `total` units."""
        phase = self.phases.get(name)
        if phase is None:
            phase = self.phases[name] = Phase(name, total, weight, max(1, parallel), prior)
        else:
            phase.total, phase.weight, phase.parallel = total, weight, max(1, parallel)
            phase.prior = prior if prior is not None else phase.prior
        self._redraw_total()
        return phase

    def start(self, name: str) -> None:
        """A unit of `name` begins (its time is measured from here to finish)."""
        self.current, self.fraction, self.unit_started = name, 0.0, self.clock()

    def advance(self, fraction: float) -> None:
        """The unit in progress is this far done (0..1), e.g. its epochs."""
        self.fraction = min(max(fraction, 0.0), 1.0)

    def finish(self, name: str | None = None, seconds: float | None = None, timed: bool = True) -> None:
        """A unit of `name` (default: the one started) is done; it took `seconds` (default: since start).
        `timed=False`: it took no real work here (a run finished earlier), so it does not enter the mean."""
        name = name or self.current
        phase = self.phases[name]
        if seconds is None and name == self.current:
            seconds = self.clock() - self.unit_started
        phase.done += 1
        if timed and seconds is not None and seconds > 0:
            phase.timed += 1
            phase.seconds += seconds
        if name == self.current:
            self.current, self.fraction = None, 0.0

    def completed(self, name: str, done: int, seconds: float) -> None:
        """Phase `name` has `done` units finished after `seconds` in all (for work reported in counts, e.g. images
        embedded in batches)."""
        phase = self.phases[name]
        phase.done = phase.timed = done
        phase.seconds = seconds

    # ---- the estimate ----------------------------------------------------------------------------------------
    def _rate(self, but: Phase) -> float | None:
        """Seconds per unit of weight, over the timed units of the phases other than `but`."""
        others = [p for p in self.phases.values() if p is not but]
        weight = sum(p.timed * p.weight for p in others)
        return sum(p.seconds for p in others) / weight if weight > 0 else None

    def left(self) -> float | None:
        """Seconds left for all the declared work; None when some remaining work has no estimate yet."""
        total = 0.0
        for phase in self.phases.values():
            remaining = phase.total - phase.done - (self.fraction if phase.name == self.current else 0.0)
            if remaining <= 0:
                continue
            per_unit = phase.per_unit(self._rate(phase))
            if per_unit is None:
                return None
            total += remaining * per_unit / phase.parallel
        return total

    def eta(self) -> str:
        """' | about X left', or '' when unknown."""
        left = self.left()
        if left is None:
            return ""
        return " | under 1 s left" if 0 < left < 0.5 else f" | about {format_seconds(left)} left"

    # ---- showing it ------------------------------------------------------------------------------------------
    def note(self, text: str, log: logging.Logger | None = None) -> None:
        """Log `text` with the time left (or show both on the bar)."""
        if self._draw and self._bar is None:
            self._open_bar()
        if self._bar is not None:
            self._bar.n = sum(min(p.done, p.total) for p in self.phases.values())
            self._bar.set_description_str(text + self.eta(), refresh=False)
            self._bar.refresh()
        else:
            (log or self.log).info("%s%s", text, self.eta())

    @property
    def drawing(self) -> bool:
        return self._draw

    def _open_bar(self) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._bar = tqdm(total=sum(p.total for p in self.phases.values()), file=self.stream, dynamic_ncols=True,
                         leave=True, bar_format="{n_fmt}/{total_fmt} |{bar:20}| {desc}")  # units done / all
        self._redirect = logging_redirect_tqdm()  # other log lines print above the bar, not through it
        self._redirect.__enter__()

    def _redraw_total(self) -> None:
        if self._bar is not None:
            self._bar.total = sum(p.total for p in self.phases.values())
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            done = sum(min(p.done, p.total) for p in self.phases.values())
            if done == self._bar.total:  # all of it: a full bar (its last line was drawn as the last unit began)
                self._bar.n = done
                self._bar.set_description_str("done", refresh=False)
                self._bar.refresh()
            self._bar.close()
            self._redirect.__exit__(None, None, None)
            self._bar = self._redirect = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
