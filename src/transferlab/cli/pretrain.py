"""`transferlab pretrain` (a model of your own, with kept checkpoints) and `transferlab transfer-curve`."""
from __future__ import annotations

from transferlab.cli._common import add_dataclass_options, dataclass_from_args, print_json
from transferlab.cli._launch import add_nproc_option, launch, wants_launch, without_nproc
from transferlab.data import DataOptions
from transferlab.training.config import TrainConfig


def register(sub) -> None:
    from transferlab.pretraining import DEFAULT_MODEL, PRETRAIN_DEFAULTS

    defaults = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in PRETRAIN_DEFAULTS.items())
    p = sub.add_parser("pretrain", help="pre-train an architecture from random weights on a source data set, "
                                        "keeping checkpoints that every command takes as --model",
                       description=f"Supervised pre-training from random weights. Writes a run folder (as finetune) "
                                   f"and OUT/checkpoints/epoch_E/ every --checkpoint-every epochs and at the last "
                                   f"one; use them as --model OUT/checkpoints/epoch_E or OUT@E (OUT@last, "
                                   f"OUT@scratch). Defaults that differ from finetune: {defaults}.")
    p.add_argument("--model", default=None, help=f"timm architecture, or {DEFAULT_MODEL} (default: {DEFAULT_MODEL}: "
                                                 f"a small ResNet for 32 px images)")
    p.add_argument("--data", required=True, help="source data: an image folder (e.g. $TRANSFERLAB_DATA/cifar10: "
                                                 "docs/data.md), or digits")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="E",
                   help="keep a checkpoint every E epochs, and the last (default: 1)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    add_nproc_option(p)
    add_dataclass_options(p, TrainConfig, exclude=("head_init",))
    add_dataclass_options(p, DataOptions, exclude=("seed",))
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("transfer-curve", help="fine-tune a target from every checkpoint of a pretrain run and from "
                                              "scratch: target accuracy against pre-training length, with a report",
                       description="Runs one comparison grid per kept checkpoint of --pretrained (strategies x seeds) "
                                   "and `full` from the architecture's random weights per seed, then writes "
                                   "OUT/report.md, OUT/report.html, OUT/results.json, OUT/curve.csv.")
    p.add_argument("--pretrained", required=True, help="a transferlab pretrain run folder")
    p.add_argument("--data", required=True, help="target data")
    p.add_argument("--strategies", default="linear_probe,full",
                   help="comma-separated strategy specs (default: linear_probe,full)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per strategy and checkpoint: --seed, --seed+1, ...")
    p.add_argument("--source-data", help="the source data (e.g. the pre-training folder): measures forgetting of "
                                         "the source task on its test split for every run; ewc's Fisher data")
    p.add_argument("--checkpoints", help="only these kept checkpoints: comma-separated epochs, last, best (the "
                                          "highest source validation accuracy); default: all")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue a curve in --out (finished runs are kept)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes per grid (as compare --jobs)")
    add_dataclass_options(p, TrainConfig)
    add_dataclass_options(p, DataOptions, exclude=("seed",))
    p.set_defaults(func=cmd_transfer_curve)


def cmd_pretrain(args) -> None:
    from transferlab.cli.core import given_keys
    from transferlab.pretraining import DEFAULT_MODEL, PRETRAIN_DEFAULTS, PRETRAIN_STRATEGY, pretrain
    from transferlab.runs import RunConfig

    given = given_keys(args)  # before the defaults below: only what the user typed may contradict a resumed run
    for key, value in PRETRAIN_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    config = RunConfig(model=args.model or DEFAULT_MODEL, data=args.data, strategy=PRETRAIN_STRATEGY,
                       train=dataclass_from_args(TrainConfig, args),
                       data_options=dataclass_from_args(DataOptions, args, seed=args.seed))
    from transferlab.models._factory import check_input_size

    check_input_size(config.model, None, config.data_options.image_size)  # a ViT's fixed size, before any write
    if wants_launch(args):
        from transferlab.pretraining import check_pretrainable
        from transferlab.runs import check_run_folder

        check_pretrainable(config)
        _, out = check_run_folder(config, args.out, resume=args.resume, overwrite=args.overwrite, given=given,
                                  dry=True)
        launch(args.nproc, without_nproc(args.argv), str(out / "checkpoint" / "last.safetensors"))
        return  # rank 0 printed the summary
    from transferlab.training import distributed

    metrics = pretrain(config, args.out, checkpoint_every=args.checkpoint_every, resume=args.resume,
                       overwrite=args.overwrite, given=given)
    if not distributed.is_main_process():
        return
    print_json({k: metrics[k] for k in ("model", "classes", "val", "test", "best_epoch", "epochs_run",
                                        "train_seconds", "checkpoints") if k in metrics})
    print(f"pre-trained run written to {args.out}; its checkpoints: --model {args.out}@E (E in the list above), "
          f"{args.out}@last, {args.out}@scratch")


def cmd_transfer_curve(args) -> None:
    from transferlab.compare.grid import split_strategy_list
    from transferlab.compare.transfer_curve import transfer_curve
    from transferlab.errors import ConfigError
    from transferlab.runs import RunConfig

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    train = dataclass_from_args(TrainConfig, args)
    base = RunConfig(model="", data=args.data, train=train,
                     data_options=dataclass_from_args(DataOptions, args, seed=args.seed))
    seeds = [train.seed + i for i in range(args.seeds)]
    result = transfer_curve(args.pretrained, base, split_strategy_list(args.strategies), seeds, args.out,
                            resume=args.resume, jobs=args.jobs, source_data=args.source_data,
                            checkpoints=args.checkpoints.split(",") if args.checkpoints else None)
    best = {name: s["best"] for name, s in result["summary"]["strategies"].items()}
    print_json({"metric": result["summary"]["metric"], "best_checkpoint": best, "notes": result["notes"]})
    print(f"report written to {args.out}/report.html and {args.out}/report.md (numbers in results.json, curve.csv)")

