"""`transferlab compare`: strategies side by side on one model and data set, with a report."""
from __future__ import annotations

import logging

from transferlab.cli._common import add_dataclass_options, dataclass_from_args
from transferlab.data import DataOptions
from transferlab.training.config import TrainConfig

logger = logging.getLogger(__name__)

DEFAULT_STRATEGIES = "linear_probe,freeze,discriminative,l2sp,lp_ft,full"
# The main job (`make demo`): the real pre-trained efficientnet_lite0 on digits in minutes on 2 CPU cores.
# Applied only when --data is digits and the option was not given. At 32 px the deepest feature maps are 1x1,
# at 64 px 2x2: BatchNorm batch statistics rest on a handful of values per channel, and a model trained on them
# meets different (running) statistics at evaluation. Measured at 64 px with --bn-stats auto: full 0.517 val
# accuracy at 0.93 train accuracy, lp_ft collapsing after its probe; with the pre-trained statistics kept
# (--bn-stats frozen): full 0.953, lp_ft 0.913 (README, docs/compare.md).
DIGITS_DEFAULTS = {"image_size": 64, "max_train": 500, "max_val": 300, "epochs": 3, "batch_size": 32, "lr": 2e-3,
                   "bn_stats": "frozen"}


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare strategies (and seeds, and training from scratch) with a report",
                       description="Runs every strategy x seed as an ordinary finetune run under OUT/runs/, plus "
                                   "the same architecture trained from scratch, and writes OUT/report.md, "
                                   "OUT/report.html, OUT/results.csv, OUT/results.json.")
    p.add_argument("--model", help="registry name, timm architecture, HF directory (default: efficientnet_lite0)")
    p.add_argument("--data", help="data folder or file, or 'digits' (default: digits)")
    p.add_argument("--strategies",
                   help="comma-separated strategy specs; a spec's own key=value,key=value stay together "
                        f"(default: {DEFAULT_STRATEGIES})")
    p.add_argument("--seeds", type=int, help="seeds per strategy: --seed, --seed+1, ... (default: 1)")
    p.add_argument("--scratch", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="also train the same architecture from random weights (default: on)")
    p.add_argument("--weights", help="weights for a timm architecture (.safetensors, or weights-only .pth)")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--resume", action="store_true",
                   help="continue a grid in --out: finished runs are kept, unfinished ones resume")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the runs in --out")
    p.add_argument("--source-data", help="source-task data, in the source model's label space (e.g. class folders "
                   "named by ImageNet class): used by ewc, and the report measures every strategy's forgetting on it")
    add_dataclass_options(p, TrainConfig)
    add_dataclass_options(p, DataOptions, exclude=("seed",))
    p.set_defaults(func=cmd_compare)


def grid_spec_from_args(args):
    from transferlab.compare import GridSpec, split_strategy_list
    from transferlab.errors import ConfigError
    from transferlab.runs import RunConfig

    args.model = args.model or "efficientnet_lite0"
    args.data = args.data or "digits"
    seeds = 1 if args.seeds is None else args.seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if args.data.strip() == "digits":
        for key, value in DIGITS_DEFAULTS.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
                logger.info("digits: --%s %s (the demo default)", key.replace("_", "-"), value)
    train = dataclass_from_args(TrainConfig, args)
    base_seed = train.seed
    # The data split and subsample stay fixed (seeded by --seed) across the grid's seeds: strategies and seeds
    # are compared on the same validation set.
    base = RunConfig(model=args.model, data=args.data, weights=args.weights, train=train,
                     data_options=dataclass_from_args(DataOptions, args, seed=base_seed),
                     strategy_options={"source_data": args.source_data} if args.source_data else {})
    return GridSpec(base=base, strategies=split_strategy_list(args.strategies or DEFAULT_STRATEGIES),
                    seeds=[base_seed + i for i in range(seeds)], scratch=args.scratch is not False)


def _given(args) -> set[str]:
    from transferlab.cli.core import given_keys

    given = given_keys(args)
    given |= {key for key in ("strategies", "scratch") if getattr(args, key) is not None}
    if args.seeds is not None or args.seed is not None:  # the seed list follows from both
        given.add("seeds")
    return given


def cmd_compare(args) -> None:
    from transferlab.compare import compare, report_from_dir

    if args.report_only:
        from pathlib import Path

        from transferlab.errors import ConfigError
        from transferlab.outputs import check_output_path

        check_output_path(args.out)
        if not (Path(args.out) / "grid.json").is_file():
            raise ConfigError(f"{args.out} holds no comparison (no grid.json); run compare first")
        results = report_from_dir(args.out, source_data=args.source_data)
    else:
        given = _given(args)  # before the defaults below fill in what was not passed
        args.model = args.model or "efficientnet_lite0"
        args.data = args.data or "digits"
        _check_model_and_data(args.model, args.data, args.source_data)
        results = compare(grid_spec_from_args(args), args.out, resume=args.resume, given=given)
    failed = [r for r in results.runs if r.status != "finished"]
    print(f"report written to {args.out}/report.html and {args.out}/report.md "
          f"(numbers in results.csv, results.json, runs.csv)")
    if failed:
        print(f"{len(failed)} of {len(results.runs)} runs did not finish: "
              + "; ".join(f"{r.strategy} seed {r.seed}: {r.error or r.status}" for r in failed))
    if results.runs and len(failed) == len(results.runs):
        from transferlab.errors import TrainingError

        first = failed[0]
        raise TrainingError(f"every run of the comparison failed (first: {first.strategy} seed {first.seed}: "
                            f"{first.error or first.status}); the report in {args.out} lists them")


def _check_model_and_data(model: str, data: str, source_data: str | None = None) -> None:
    """Cheap checks before any run: every cell would fail the same way otherwise."""
    from pathlib import Path

    from transferlab.data._digits import is_digits_spec
    from transferlab.errors import ConfigError
    from transferlab.models import list_models
    from transferlab.models.timm_models import is_timm_model

    if not (model in list_models() or Path(model).is_dir() or model.startswith("hf:") or is_timm_model(model)):
        raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(list_models())}, a timm "
                          "architecture name, a Hugging Face model directory, or hf:<hub id>")
    for path in (data, source_data):
        if path and not is_digits_spec(path) and not Path(path).expanduser().exists():
            raise ConfigError(f"{path}: no such file or folder; give an image folder, a text file or folder, "
                              "or 'digits'")
