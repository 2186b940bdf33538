"""Running labs into folders transferlab owns: one lab (DIR/lab.json marks it), or all of them with one page."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transferlab.data import shared_datasets
from transferlab.errors import ConfigError
from transferlab.labs.base import execute, lab_data
from transferlab.labs.registry import LABS, get_lab
from transferlab.outputs import LAB_FOLDER, LAB_FORMAT, LABS_FOLDER, check_output_path, folder_state, \
    foreign_message
from transferlab.progress import Progress
from transferlab.safe_io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


def _claim(out: Path, kind, marker: dict) -> None:
    """Write the folder's marker, or check that the folder already holds this same lab (it then continues:
    finished runs are kept)."""
    state = folder_state(out, kind)
    if state == "foreign":
        raise ConfigError(foreign_message(out, kind))
    if state != "new":
        saved = json.loads((out / kind.marker).read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in marker} != marker:
            raise ConfigError(f"{out} holds {saved.get('lab', 'labs')} with --quick {saved.get('quick')} and "
                              f"{len(saved.get('seeds', []))} seeds; choose another --out (asked: "
                              f"{marker.get('lab', 'all')}, --quick {marker['quick']}, {len(marker['seeds'])} seeds)")
        logger.info("%s: continuing (finished runs are kept)", out)
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / kind.marker, marker)


MAX_SEEDS = 100  # a lab trains every setting once per seed: more is a typo, not a measurement


def _seeds(quick: bool, seeds: int | None) -> list[int]:
    n = seeds if seeds is not None else (2 if quick else 3)
    if n < 2:
        raise ConfigError(f"--seeds must be >= 2 (a verdict needs a spread), got {n}")
    if n > MAX_SEEDS:
        raise ConfigError(f"--seeds must be at most {MAX_SEEDS} (each seed is a full set of training runs), got {n}")
    return list(range(n))


def run_lab(name: str, out: str | Path, quick: bool = False, seeds: int | None = None,
            data_root: str | Path | None = None) -> dict:
    """`data_root`: the folder that holds the real data sets the lab reads (--data-root; default
    $TRANSFERLAB_DATA). Checked before anything is written."""
    lab = get_lab(name)
    out = check_output_path(out)
    listed = _seeds(quick, seeds)
    lab_data(lab, data_root)
    _claim(out, LAB_FOLDER, {"format": LAB_FORMAT, "lab": lab.name, "quick": quick, "seeds": listed})
    return execute(lab, out, quick, listed, data_root)


def _all_data(data_root: str | Path | None) -> None:
    """Every lab's data sets, checked before the first lab starts (one line naming the labs that need them)."""
    readers = [lab.name for lab in LABS if lab.datasets]
    if readers:
        names = [n for lab in LABS for n in lab.datasets]
        listed = ", ".join(f"`{r}`" for r in readers)
        shared_datasets(names, data_root, reader=f"`lab run all` (lab{'s' if len(readers) > 1 else ''} {listed})")


def _stated_minutes(lab, quick: bool, seeds: int) -> float:
    """The lab's stated run time (Lab.minutes, for its default seeds) scaled to `seeds`."""
    return (lab.quick_minutes if quick else lab.minutes) * seeds / len(_seeds(quick, None))


def run_all(out: str | Path, quick: bool = False, seeds: int | None = None, command: str = "",
            data_root: str | Path | None = None) -> list[dict]:
    """Every lab into DIR/<name>/, then DIR/labs.md and DIR/labs.html; a lab that fails is reported and the
    others go on. The real data sets the labs read are checked first (`data_root` as in run_lab)."""
    from transferlab.labs.page import all_page

    out = check_output_path(out)
    listed = _seeds(quick, seeds)
    _all_data(data_root)
    _claim(out, LABS_FOLDER, {"format": LAB_FORMAT, "quick": quick, "seeds": listed})
    start = time.perf_counter()
    records, failed = [], []
    with Progress(logger) as progress:
        for lab in LABS:  # one phase per lab, weighted by its stated minutes (seeds scaled): the time left
            minutes = _stated_minutes(lab, quick, len(listed))  # is the stated total until a lab was timed
            progress.add(lab.name, 1, weight=minutes, prior=60 * minutes)
        for i, lab in enumerate(LABS):
            progress.start(lab.name)
            progress.note(f"lab {i + 1}/{len(LABS)}: {lab.name}")
            ok = True
            try:
                records.append(run_lab(lab.name, out / lab.name, quick, len(listed), data_root))
            except Exception as exc:  # one lab's failure must not lose the others
                ok = False
                logger.error("lab %s failed: %s: %s", lab.name, type(exc).__name__, exc)
                failed.append(f"{lab.name}: {type(exc).__name__}: {exc}")
            progress.finish(lab.name, timed=ok)  # a lab that failed early says nothing of the others' time
    seconds = time.perf_counter() - start
    markdown, page = all_page(records, out, command or f"transferlab lab run all{' --quick' if quick else ''}",
                              seconds)
    if failed:
        markdown += "\n\n## Labs that failed\n\n" + "\n".join(f"- {f}" for f in failed) + "\n"
    atomic_write_text(out / "labs.md", markdown)
    atomic_write_text(out / "labs.html", page)
    if failed and not records:
        raise ConfigError(f"every lab failed (first: {failed[0]})")
    return records
