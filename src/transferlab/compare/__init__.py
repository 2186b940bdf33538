"""Compare fine-tuning strategies side by side: a grid of ordinary runs, a from-scratch baseline, a report.

    results = compare(grid_spec(), "out")   # the grid `transferlab compare` runs (the digits demo defaults)
    spec = grid_spec(data="path/to/images", strategies="linear_probe,full", seeds=3, epochs=5)
    results = compare(spec, "out2")         # runs DIR/runs/<strategy>/<seed>/, writes DIR/report.{md,html} ...

Report sections are registered in `transferlab.compare.report` (`register_section`); diagnostics add theirs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from transferlab.compare.executor import run_grid
from transferlab.compare.grid import DEFAULT_STRATEGIES, SCRATCH, GridSpec, grid_spec, split_strategy_list
from transferlab.compare.report import Section, add_report_phase, register_section, write_report
from transferlab.compare.results import GridResults, collect
from transferlab.progress import Progress

# The diagnostics' sections (CKA by depth, forgetting, BatchNorm shift) and the contamination section
# (clean and dirty test examples) register themselves on import.
from transferlab.diagnostics import report as _diagnostic_sections  # noqa: E402,F401  isort: skip
from transferlab.contamination import subsets as _contamination_section  # noqa: E402,F401  isort: skip
from transferlab.compare import tune_report as _tune_section  # noqa: E402,F401  isort: skip
from transferlab.compare import target_report as _target_section  # noqa: E402,F401  isort: skip

__all__ = ["DEFAULT_STRATEGIES", "SCRATCH", "grid_spec", "GridSpec", "GridResults", "Section", "collect", "compare",
           "register_section", "report_from_dir", "run_grid", "split_strategy_list", "write_report"]


def compare(spec: GridSpec, out: str | Path, resume: bool = False, given: set[str] | None = None,
            jobs: int = 1, contamination: str | None = None, executor: str = "local", address: str | None = None,
            cpus_per_cell: int | None = None, gpus_per_cell: float | None = None, tracker=None) -> GridResults:
    """Run the grid (continuing it with `resume`; in `jobs` worker processes, or as Ray tasks with
    `executor="ray"`, see run_grid), then write the report from the runs' metrics.json. `given`: with resume, the
    option keys the user passed (only those may contradict the saved grid). `contamination`: a `transferlab
    contamination` folder of the test split (the report's contamination section)."""
    # One progress for the runs and the report's sections: the time left it logs counts both.
    with Progress(logging.getLogger("transferlab.compare.grid")) as progress:
        add_report_phase(progress, runs=(len(spec.strategies) + len(spec.scratch_candidates())) * len(spec.seeds))
        cell_results = run_grid(spec, out, resume=resume, given=given, jobs=jobs, executor=executor,
                                address=address, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell,
                                progress=progress, tracker=tracker)
        results = collect(out, json.loads((Path(out) / "grid.json").read_text()), cell_results)
        write_report(results, contamination=contamination, progress=progress)
    return results


def report_from_dir(out: str | Path, source_data: str | None = None, contamination: str | None = None) -> GridResults:
    """(Re)write the report of a grid folder from what its runs left on disk; `source_data` measures
    forgetting for runs that were not given source data; `contamination` adds the contamination section."""
    results = collect(out, json.loads((Path(out) / "grid.json").read_text()))
    write_report(results, source_data=source_data, contamination=contamination)
    return results
