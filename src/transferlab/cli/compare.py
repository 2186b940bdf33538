"""`transferlab compare`: strategies side by side on one model and data set, with a report."""
from __future__ import annotations

import dataclasses
import logging

from transferlab.cli._common import add_dataclass_options, check_command_outputs
from transferlab.data import DataOptions
from transferlab.training.config import TrainConfig

logger = logging.getLogger(__name__)

from transferlab.compare.grid import DEFAULT_STRATEGIES


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare strategies (and seeds, and training from scratch) with a report",
                       description="Runs every strategy x seed as an ordinary finetune run under OUT/runs/, plus "
                                   "the same architecture trained from scratch, and writes OUT/report.md, "
                                   "OUT/report.html, OUT/results.csv, OUT/results.json.")
    p.add_argument("--model", help="registry name, timm architecture, HF directory (default: efficientnet_lite0)")
    p.add_argument("--data", help="data folder or file, 'digits' or 'sklearn:NAME' (default: digits)")
    p.add_argument("--strategies",
                   help="comma-separated strategy specs; a spec's own key=value,key=value stay together "
                        f"(default: {DEFAULT_STRATEGIES})")
    p.add_argument("--seeds", type=int, help="seeds per strategy: --seed, --seed+1, ... (default: 1)")
    p.add_argument("--scratch", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="also train the same architecture from random weights (default: on)")
    p.add_argument("--scratch-epochs", type=int, metavar="N",
                   help="epochs of the from-scratch baseline (default: --epochs); a random model usually needs more "
                        "than a fine-tune, and a baseline given too few is a weak one")
    p.add_argument("--weights", help="weights for a timm architecture (.safetensors, or weights-only .pth)")
    p.add_argument("--head", help="the new head of every run: linear (default), mlp[:hidden=256,dropout=0.0] or "
                                  "vib[:dim=384,beta=1e-5,annealing=linear,learnable_prior=true]")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--resume", action="store_true",
                   help="continue a grid in --out: finished runs are kept, unfinished ones resume")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run the grid's cells in N worker processes, torch's threads divided among them (at most "
                        "the cells still to run); the report equals a sequential one (default: 1)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the cells run: local (this process, or --jobs worker processes) or ray (one Ray task "
                        "per cell, on --address or a local Ray instance; needs pip install \"transferlab[cluster]\"); "
                        "the report is the same (default: local)")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="with --executor ray: the Ray cluster's head node (as `ray start --head` prints it, or auto); "
                        "every node needs transferlab, the data at the same paths and --out on a shared file system "
                        "(default: start a local Ray instance)")
    p.add_argument("--cpus-per-cell", type=int, metavar="C",
                   help="with --executor ray: CPUs Ray reserves for each cell, and its torch threads (default: 1)")
    p.add_argument("--gpus-per-cell", type=float, metavar="G",
                   help="with --executor ray: GPUs Ray reserves for each cell; 0.5 puts two cells on one GPU "
                        "(default: 0, the cells run on CPU)")
    p.add_argument("--tune", type=int, metavar="TRIALS",
                   help="first give every strategy (and the from-scratch baseline) TRIALS Optuna trials (TPE, "
                        "seeded; median pruning) on validation accuracy, then run each one's best setting over the "
                        "seeds; the report shows the default and the tuned comparison side by side")
    p.add_argument("--tune-space", metavar="SPEC",
                   help="with --tune: override search ranges, 'strategy:param=low..high[:log],...' or "
                        "'strategy:param=a|b|c' (e.g. l2sp:alpha=1e-3..1:log,beta=1e-4..0.1:log,scratch:lr=1e-4..1e-2:log)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the runs in --out")
    from transferlab.tracking import TRACK_HELP

    p.add_argument("--track", action="append", metavar="SPEC",
                   help=TRACK_HELP + "; a grid is one parent run with a child per finished cell, and --resume adds "
                                     "no duplicates")
    p.add_argument("--source-data", help="source-task data, in the source model's label space (e.g. class folders "
                   "named by ImageNet class): used by ewc, and the report measures every strategy's forgetting on it")
    p.add_argument("--target-data", metavar="PATH",
                   help="unlabelled target-domain data for every cell (its labels never read): what dann, cdan and "
                        "mcc adapt to; every cell reports Deep Embedded Validation's target risk, and the report "
                        "lists it beside source-validation accuracy (docs/domain-adaptation.md)")
    p.add_argument("--contamination", metavar="DIR",
                   help="an output folder of transferlab contamination for the data's test split: the report adds "
                        "every strategy's test accuracy on its clean and dirty examples")
    add_dataclass_options(p, TrainConfig)
    add_dataclass_options(p, DataOptions, exclude=("seed",))
    p.set_defaults(func=cmd_compare)


def grid_spec_from_args(args):
    from transferlab.compare import grid_spec

    options = {f.name: getattr(args, f.name) for cls in (TrainConfig, DataOptions) for f in dataclasses.fields(cls)
               if getattr(args, f.name, None) is not None}
    args.model = args.model or "efficientnet_lite0"
    args.data = args.data or "digits"
    return grid_spec(model=args.model, data=args.data, strategies=args.strategies or DEFAULT_STRATEGIES,
                     seeds=args.seeds, scratch=args.scratch is not False, scratch_epochs=args.scratch_epochs,
                     weights=args.weights, tune=args.tune, tune_space=args.tune_space,
                     source_data=args.source_data, target_data=args.target_data, head=args.head, **options)


def _given(args) -> set[str]:
    from transferlab.cli.core import given_keys

    given = given_keys(args)
    given |= {key for key in ("strategies", "scratch", "scratch_epochs") if getattr(args, key) is not None}
    if args.tune is not None or args.tune_space is not None:
        given.add("tune")
    if args.seeds is not None or args.seed is not None:  # the seed list follows from both
        given.add("seeds")
    return given


def cmd_compare(args) -> None:
    from transferlab.compare import compare, report_from_dir
    from transferlab.runs import run_inputs
    from transferlab.tracking import parse_tracks
    from transferlab.tracking.live import GridTracking

    tracks = parse_tracks(args.track)  # a bad spec or a missing package: before the grid runs
    if args.contamination:  # checked before any run: a bad folder should not wait for the whole grid
        from transferlab.contamination.subsets import read_contamination

        read_contamination(args.contamination)
    tracker = GridTracking(tracks)
    if args.report_only:
        from pathlib import Path

        from transferlab.errors import ConfigError

        _check_grid_paths(args.out, {**_saved_grid_inputs(args.out), "--source-data": args.source_data,
                                     "--contamination": args.contamination}, tracks)
        if not (Path(args.out) / "grid.json").is_file():
            raise ConfigError(f"{args.out} holds no comparison (no grid.json); run compare first")
        with tracker:  # the report files to the grid's parent run (continued from GRID/tracking.json)
            if tracks:
                tracker.start(args.out)
            results = report_from_dir(args.out, source_data=args.source_data, contamination=args.contamination)
    else:
        given = _given(args)  # before the defaults below fill in what was not passed
        args.model = args.model or "efficientnet_lite0"
        args.data = args.data or "digits"
        _check_model_and_data(args.model, args.data, args.source_data, args.target_data)
        spec = grid_spec_from_args(args)
        _check_grid_paths(args.out, {**run_inputs(spec.base), "--contamination": args.contamination}, tracks,
                          spec.base.train.cache_dir)
        with tracker:  # a parent run when the grid starts, a child per cell as it starts; FAILED if this raises
            results = compare(spec, args.out, resume=args.resume, given=given, jobs=args.jobs,
                              contamination=args.contamination, executor=args.executor, address=args.address,
                              cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell,
                              tracker=tracker if tracks else None)
    failed = [r for r in results.runs if r.status != "finished"]
    print(f"report written to {args.out}/report.html and {args.out}/report.md "
          f"(numbers in results.csv, results.json, runs.csv)")
    if failed:
        print(f"{len(failed)} of {len(results.runs)} runs did not finish: "
              + "; ".join(f"{r.strategy} seed {r.seed}: {r.error or r.status}" for r in failed))
    for line in tracker.lines():
        print(line)
    tracker.raise_failures()
    if results.runs and len(failed) == len(results.runs):
        from transferlab.errors import TrainingError

        first = failed[0]
        raise TrainingError(f"every run of the comparison failed (first: {first.strategy} seed {first.seed}: "
                            f"{first.error or first.status}); the report in {args.out} lists them")


def _check_grid_paths(out: str, inputs: dict[str, object], tracks, cache_dir: str | None = None) -> None:
    """--out, its cells' folder runs/, --cache-dir and the --track targets against every input (the runs' paths,
    --contamination) and each other, before the grid starts: a cell would otherwise fail only when it runs."""
    from pathlib import Path

    check_command_outputs({"--out": out, "--out/runs": str(Path(out) / "runs") if str(out or "").strip() else None,
                           "--cache-dir": cache_dir or None}, inputs, tracks)


def _saved_grid_inputs(out: str) -> dict[str, object]:
    """The inputs of the grid saved in `out` (its grid.json), for --report-only; none when there is none to read
    (report_from_dir then says what is wrong)."""
    import json
    from pathlib import Path

    from transferlab.compare.grid import GridSpec
    from transferlab.errors import TransferlabError
    from transferlab.runs import run_inputs

    saved = Path(out) / "grid.json" if str(out or "").strip() else None
    try:
        return run_inputs(GridSpec.from_dict(json.loads(saved.read_text(encoding="utf-8"))).base) if saved else {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, TransferlabError):
        return {}


def _check_model_and_data(model: str, data: str, source_data: str | None = None,
                          target_data: str | None = None) -> None:
    """Cheap checks before any run: every cell would fail the same way otherwise."""
    from pathlib import Path

    from transferlab.data import is_builtin_spec
    from transferlab.errors import ConfigError
    from transferlab.models import family_of, list_models

    if family_of(model) is None:  # no model family claims the name
        raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(list_models())}, a timm "
                          "architecture name, a Hugging Face model directory, or hf:<hub id>")
    for path in (data, source_data, target_data):
        if path and not is_builtin_spec(path) and not Path(path).expanduser().exists():
            raise ConfigError(f"{path}: no such file or folder; give an image folder, a text file or folder, "
                              "a .npz file, 'digits' or 'sklearn:NAME'")
