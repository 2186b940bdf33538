"""Running labs into folders transferlab owns: one lab (DIR/lab.json marks it), or all of them with one page."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.labs.base import execute
from transferlab.labs.registry import LABS, get_lab
from transferlab.outputs import LAB_FOLDER, LAB_FORMAT, LABS_FOLDER, check_output_path, folder_state, \
    foreign_message
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


def run_lab(name: str, out: str | Path, quick: bool = False, seeds: int | None = None) -> dict:
    lab = get_lab(name)
    out = check_output_path(out)
    listed = _seeds(quick, seeds)
    _claim(out, LAB_FOLDER, {"format": LAB_FORMAT, "lab": lab.name, "quick": quick, "seeds": listed})
    return execute(lab, out, quick, listed)


def run_all(out: str | Path, quick: bool = False, seeds: int | None = None, command: str = "") -> list[dict]:
    """Every lab into DIR/<name>/, then DIR/labs.md and DIR/labs.html; a lab that fails is reported and the
    others go on."""
    from transferlab.labs.page import all_page

    out = check_output_path(out)
    listed = _seeds(quick, seeds)
    _claim(out, LABS_FOLDER, {"format": LAB_FORMAT, "quick": quick, "seeds": listed})
    start = time.perf_counter()
    records, failed = [], []
    for i, lab in enumerate(LABS):
        logger.info("lab %d/%d: %s", i + 1, len(LABS), lab.name)
        try:
            records.append(run_lab(lab.name, out / lab.name, quick, len(listed)))
        except Exception as exc:  # one lab's failure must not lose the others
            logger.error("lab %s failed: %s: %s", lab.name, type(exc).__name__, exc)
            failed.append(f"{lab.name}: {type(exc).__name__}: {exc}")
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
