"""What a lab is, and the context it runs in.

A lab is a function `run(ctx) -> LabResult` with a one-sentence claim. It trains ordinary runs through
`ctx.finetune` (run folders under DIR/runs/, reused when a lab is run again in the same folder, so an interrupted
lab continues; a finished run made with other settings is refused), reads its numbers back from those folders with
`ctx.read` (each reading is recorded with where it came from, so a test can check it against the file), saves any
measurement of its own with `ctx.save_measure`, and returns its checks (labs/verdict.py decides the verdict from
them), a table of numbers and a figure. A real data set it reads in place (hymenoptera: never copied into DIR) is
named in `Lab.datasets` and reached through `ctx.dataset(name)`: `lab_data` finds them all under --data-root or
$TRANSFERLAB_DATA before anything is written, and a lab that needs one that is not there is refused in one line.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.data import shared_datasets
from transferlab.errors import ConfigError
from transferlab.labs.verdict import RULE, Check, lab_verdict
from transferlab.safe_io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lab:
    name: str
    title: str
    claim: str  # the chapter's claim, one sentence
    data: str  # what it runs on, in words (`transferlab lab list`); every name in `datasets` appears in it
    minutes: float  # expected run time on 2 CPU cores, full version
    quick_minutes: float  # the --quick version (the test suite runs it)
    run: Callable[["LabContext"], "LabResult"]
    reference: str = ""  # the paper the claim comes from
    datasets: tuple[str, ...] = ()  # real data sets read from --data-root / $TRANSFERLAB_DATA (docs/data.md)
    chapter: float = 1000  # its place among the labs (the chapter's order): `transferlab lab list`, `lab run all`


@dataclass
class LabResult:
    checks: list[Check]
    numbers: dict  # every number the lab computed, by name (tables: lists of rows)
    figure: object  # a matplotlib Figure (transferlab.figures.new_figure)
    summary: str  # what was measured, in words, with the numbers (built from them, not written in advance)
    notes: list[str] = field(default_factory=list)


@dataclass
class LabContext:
    out: Path
    quick: bool
    seeds: list[int]
    readings: list[dict] = field(default_factory=list)  # {"file", "key", "value"}: every number read back
    runs: list[str] = field(default_factory=list)  # run folders made, relative to out
    data: dict[str, Path] = field(default_factory=dict)  # the lab's Lab.datasets, found (lab_data)

    def dataset(self, name: str) -> str:
        """The folder of the real data set NAME, which the lab declares in Lab.datasets."""
        if name not in self.data:
            raise KeyError(f"data set {name!r} is not among this lab's Lab.datasets ({sorted(self.data)}): declare "
                           f"it there, so that `lab run` finds it before the lab starts")
        return str(self.data[name])

    def finetune(self, name: str, config) -> dict:
        """Train `config` into DIR/runs/NAME (kept when it finished before: a lab run again continues); returns
        its metrics.json."""
        from transferlab.runs import finetune, run_state

        folder = self.out / "runs" / name
        state = run_state(folder)
        if state == "finished":
            _check_same_run(folder, config)
            logger.info("lab run %s: finished earlier, kept", name)
        else:
            logger.info("lab run %s", name)
            finetune(config, folder, resume=state == "unfinished")
        relative = str(folder.relative_to(self.out))
        if relative not in self.runs:
            self.runs.append(relative)
        return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def read(self, relative_file: str, key: str) -> float:
        """The number at `key` ('val.accuracy', 'history.3.val_loss' for a .jsonl line) of a file in DIR,
        recorded as a reading."""
        value = read_key(self.out / relative_file, key)
        self.readings.append({"file": relative_file, "key": key, "value": value})
        return value

    def save_drift(self, name: str, cache: dict) -> str:
        """CKA and relative weight change per backbone depth group of run NAME against its pre-trained model
        (diagnostics.drift, as `transferlab diagnose drift` measures it), saved as a measure; its path."""
        from transferlab.diagnostics.drift import drift_for_run

        result = drift_for_run(self.run_dir(name), cache=cache)
        backbone = [g for g in result.groups if g.cka is not None]  # the new head has no pre-trained counterpart
        return self.save_measure(f"drift_{name}", {
            "run": f"runs/{name}", "split": result.split, "examples": result.examples, "note": result.note,
            "groups": [{"name": g.name, "index": g.index, "weight_change": g.weight_change, "cka": g.cka}
                       for g in backbone]})

    def save_measure(self, name: str, values: dict) -> str:
        """A measurement of the lab's own (a diagnostic's numbers) as DIR/measures/NAME.json; returns its path
        relative to DIR, for `read`."""
        relative = f"measures/{name}.json"
        atomic_write_json(self.out / relative, values)
        return relative


def _check_same_run(folder: Path, config) -> None:
    """Refuse a finished run in FOLDER that was made with other settings than `config` (a run folder from another
    lab, another version of this one, or the user's: its numbers would not be this lab's)."""
    import copy

    from transferlab.runs import read_run_config, resume_differences, with_absolute_paths

    saved = read_run_config(folder)
    if saved is None:
        raise ConfigError(f"lab run {folder} has metrics but no config.json; choose another --out")
    differences = resume_differences(with_absolute_paths(saved), with_absolute_paths(copy.deepcopy(config)))
    if differences:
        first = ", ".join(f"{key} {old!r} there, {new!r} now" for key, (old, new) in list(differences.items())[:3])
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise ConfigError(f"lab run {folder} was made with other settings: {first}{more}; choose another --out "
                          f"(nothing was changed)")


def read_key(path: Path, key: str) -> float:
    """The number at a dotted key of a JSON file, or of line N of a .jsonl file ('3.val_loss')."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        value = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        value = json.loads(text)
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{path}: {key} is not a number ({value!r})")
    return float(value)


def lab_data(lab: Lab, data_root: str | Path | None = None) -> dict[str, Path]:
    """{name: folder} of the real data sets the lab reads, under `data_root` (--data-root) or $TRANSFERLAB_DATA;
    a ConfigError line naming the setting when one is not there. A lab on bundled data (digits) needs none."""
    return shared_datasets(lab.datasets, data_root, reader=f"lab `{lab.name}`")


def execute(lab: Lab, out: Path, quick: bool, seeds: list[int], data_root: str | Path | None = None) -> dict:
    """Run a lab into `out` and write DIR/result.json, DIR/figure.png, DIR/README.md; returns the result dict.
    `data_root`: where its Lab.datasets are (default: $TRANSFERLAB_DATA)."""
    from transferlab.figures import save_png
    from transferlab.labs.page import lab_readme

    ctx = LabContext(out=out, quick=quick, seeds=list(seeds), data=lab_data(lab, data_root))
    start = time.perf_counter()
    result = lab.run(ctx)
    seconds = time.perf_counter() - start
    save_png(result.figure, out / "figure.png")
    checks = [c.to_dict() for c in result.checks]
    record = {"format": "transferlab-lab-1", "lab": lab.name, "title": lab.title, "claim": lab.claim,
              "reference": lab.reference, "data": lab.data, "quick": quick, "seeds": ctx.seeds,
              "verdict": lab_verdict(result.checks), "rule": RULE, "checks": checks, "numbers": result.numbers,
              "summary": result.summary, "notes": result.notes, "readings": ctx.readings, "runs": ctx.runs,
              "seconds": seconds}
    atomic_write_json(out / "result.json", _finite(record))
    atomic_write_text(out / "README.md", lab_readme(record))
    logger.info("lab %s: %s (%.0f s)", lab.name, record["verdict"], seconds)
    return record


def _finite(value):
    """NaN and inf as None: result.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
