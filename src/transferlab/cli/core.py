"""Core commands: models, strategies, finetune, evaluate, predict."""
from __future__ import annotations

import argparse

from transferlab.cli._common import add_dataclass_options, check_command_outputs, dataclass_from_args, print_json
from transferlab.cli._launch import add_nproc_option, launch, wants_launch, without_nproc
from transferlab.data import DataOptions
from transferlab.training.config import TrainConfig


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--groups", metavar="NAME", help="print a model's depth groups with parameter counts")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("strategies", help="list the fine-tuning strategies and their parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("finetune", help="adapt a pre-trained model to a data set")
    add_run_options(p)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--tune", type=int, metavar="TRIALS",
                   help="first run TRIALS Optuna trials of the strategy (TPE, seeded; median pruning on each epoch's "
                        "validation accuracy; the study in OUT/tuning/, continued by --resume), then train the best "
                        "setting into --out; the study's summary goes to OUT/tune.json")
    p.add_argument("--tune-space", metavar="SPEC",
                   help="with --tune: override search ranges, 'strategy:param=low..high[:log],...' or "
                        "'strategy:param=a|b|c' (e.g. l2sp:alpha=1e-3..1:log,lr=1e-4..1e-2:log)")
    add_nproc_option(p)
    p.add_argument("--track", action="append", metavar="SPEC", help=_track_help())
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics of a run's selected weights, as JSON")
    p.add_argument("--run", required=True)
    p.add_argument("--data", help="evaluate on other data with the same classes")
    p.add_argument("--split", choices=["val", "test", "train"], default="val")
    p.add_argument("--max-val", type=int, metavar="N",
                   help="evaluate on at most N validation examples (a stratified, seeded subsample); default: the "
                        "run's --max-val on its own data, all examples of other --data")
    p.add_argument("--contamination", metavar="DIR",
                   help="an output folder of transferlab contamination for this split: adds the accuracy on its "
                        "clean and dirty examples")
    p.add_argument("--task", metavar="NAME", help="a merged multi-task module's task (transferlab modules merge)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and probability for each input (image path or text), as TSV with "
                                       "an error column; exit 2 when an input could not be read")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run")
    which.add_argument("--model", metavar="FILE.onnx", help="an exported model (transferlab export): run with ONNX "
                                                           "Runtime, using the preprocess.json and classes.json beside it")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (a shell glob such as DIR/*.png for a "
                                                              "folder's), or texts for a text run")
    p.add_argument("--task", metavar="NAME", help="a merged multi-task module's task (transferlab modules merge)")
    p.set_defaults(func=cmd_predict)


def add_run_options(p: argparse.ArgumentParser, strategy_required: bool = True) -> None:
    p.add_argument("--model", required=True, help="registry name, timm architecture, HF directory, hf:<id>")
    p.add_argument("--data", required=True, help="data folder or file (.npz: numeric vectors), 'digits' or "
                                                 "'sklearn:NAME' (wine, breast_cancer, iris, digits as vectors)")
    if strategy_required:
        p.add_argument("--strategy", help="strategy spec, e.g. discriminative:decay=0.5+l2sp (default: full; "
                                          "with --resume: the run's)")
    p.add_argument("--weights", help="weights for a timm architecture (.safetensors, or weights-only .pth)")
    p.add_argument("--head", help="the new head: linear (default), mlp[:hidden=256,dropout=0.0] or "
                                  "vib[:dim=384,beta=1e-5,annealing=linear,learnable_prior=true] (an information "
                                  "bottleneck)")
    p.add_argument("--source-data", help="source-task data (for ewc and forgetting)")
    p.add_argument("--target-data", metavar="PATH",
                   help="unlabelled target-domain data in any layout --data accepts (its labels never read) or a flat "
                        "folder of images: what the "
                        "domain adaptation strategies (dann, cdan, mcc) adapt to; every run given it reports Deep "
                        "Embedded Validation's target risk estimate (docs/domain-adaptation.md)")
    add_dataclass_options(p, TrainConfig)
    add_dataclass_options(p, DataOptions, exclude=("seed",))  # --seed seeds both


def run_config_from_args(args, strategy: str | None = None):
    from transferlab.runs import RunConfig

    options = {"source_data": args.source_data} if getattr(args, "source_data", None) else {}
    if getattr(args, "target_data", None):
        options["target_data"] = args.target_data
    return RunConfig(model=args.model, data=args.data, strategy=strategy or getattr(args, "strategy", None) or "full",
                     weights=args.weights, head=getattr(args, "head", None) or "linear",
                     train=dataclass_from_args(TrainConfig, args),
                     data_options=dataclass_from_args(DataOptions, args, seed=args.seed),
                     strategy_options=options)


def given_keys(args) -> set[str]:
    """The run-config keys (flat, as runs.resume_differences names them) that the user passed."""
    import dataclasses

    given = set()
    for key in ("model", "data", "strategy", "weights", "head"):
        if getattr(args, key, None) is not None:
            given.add(key)
    if getattr(args, "source_data", None):
        given.add("strategy_options.source_data")
    if getattr(args, "target_data", None):
        given.add("strategy_options.target_data")
    for section, cls in (("train", TrainConfig), ("data_options", DataOptions)):
        given |= {f"{section}.{f.name}" for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return given


def cmd_models(args) -> None:
    from transferlab.models import create_model, list_models, pretrained_cfg

    if args.groups:
        model = create_model(args.groups, 2)
        groups = model.group_summary()
        if args.json:
            print_json(groups)
            return
        for g in groups:
            print(f"{g['index']:>3}  {g['name']:<20} {g['params']:>12,d}")
        return
    entries = [pretrained_cfg(n).to_dict() for n in list_models()]
    if args.json:
        print_json(entries)
        return
    for e in entries:
        print(f"{e['name']:<20} {e['modality']:<6} {e['architecture']:<24} {e['license']:<12} {e['weights']}")
    print("\nAlso: any timm architecture name (random init or --weights FILE), any Hugging Face model "
          "directory, or hf:<hub id> where a network exists.")


def cmd_strategies(args) -> None:
    from transferlab.strategies import describe, list_strategies

    entries = [describe(cls) for cls in list_strategies()]
    if args.json:
        print_json(entries)
        return
    for e in entries:
        params = ", ".join(f"{p['name']}={p['default']}" for p in e["params"])
        print(f"{e['name']}{':' + params if params else ''}  [{e['role']}]\n    {e['help']}")
        for v in e.get("variants", []):  # peft:<type>: its config class's fields
            fields = ", ".join(f"{p['name']}={p['default']}" for p in v["params"])
            print(f"    {v['spec']} ({v['config']}): {fields}")
    print("\nCompose with '+', e.g. discriminative:decay=0.5+l2sp:alpha=0.01")


def cmd_finetune(args) -> None:
    from transferlab.runs import check_run_folder, finetune, run_inputs
    from transferlab.training import distributed

    from transferlab.tracking import parse_tracks
    from transferlab.tracking.live import LiveTracking

    tracks = parse_tracks(args.track)  # a bad spec or a missing package: before any work
    config = run_config_from_args(args)
    # --out, --cache-dir and the --track targets: clear of every input and of each other, before any work
    check_command_outputs({"--out": args.out, "--cache-dir": config.train.cache_dir or None}, run_inputs(config),
                          tracks)
    from transferlab.models._factory import check_input_size

    check_input_size(config.model, config.weights, config.data_options.image_size)  # a ViT's fixed size
    if args.tune is not None or args.tune_space is not None:  # a study first, then the best setting's run
        from transferlab.cli._finetune_tune import cmd_finetune_tune

        return cmd_finetune_tune(args, config, tracks, given_keys(args), _print_summary)
    if wants_launch(args):  # the checks that need no data, here; then the processes run this command
        _, out = check_run_folder(config, args.out, resume=args.resume, overwrite=args.overwrite,
                                  given=given_keys(args), dry=True)
        launch(args.nproc, without_nproc(args.argv), str(out / "checkpoint" / "last.safetensors"))
        return  # rank 0 printed the summary
    # tracked while it trains: the trainer calls the hooks on rank 0 only; the `with` ends the MLflow run
    # (FINISHED, or FAILED when finetune raises) once metrics.json is written
    tracker = LiveTracking(tracks)
    with tracker:
        metrics = finetune(config, args.out, resume=args.resume, overwrite=args.overwrite, given=given_keys(args),
                           callbacks=[tracker] if tracks else None)
    if not distributed.is_main_process():
        return
    _print_summary(metrics, args.out)
    for line in tracker.lines():
        print(line)
    tracker.raise_failures()  # a tracker that failed on the way: one error line, the run is on disk


def _track_help() -> str:
    from transferlab.tracking import TRACK_HELP

    return TRACK_HELP


def _print_summary(metrics: dict, out: str) -> None:
    summary = {k: metrics[k] for k in ("model", "strategy", "val", "test", "trainable_params", "total_params",
                                       "trainable_share", "train_seconds", "epochs_run", "best_epoch",
                                       "skipped_inputs") if k in metrics}
    for key in ("task_module_bytes", "full_checkpoint_bytes", "world_size", "global_batch_size", "dev"):
        if key in metrics:
            summary[key] = metrics[key]
    print_json(summary)
    print(f"run written to {out} (metrics.json, history.jsonl, checkpoint/)")


def cmd_evaluate(args) -> None:
    from transferlab.runs import load_run
    from transferlab.training.evaluate import evaluate, ordered_loader
    from transferlab.training.trainer import resolve_device

    contamination = None
    if getattr(args, "contamination", None):  # checked before the run loads: a bad folder fails at once
        from transferlab.contamination.subsets import read_contamination

        contamination = read_contamination(args.contamination)
    config, data, model, _ = load_run(args.run, args.data, max_val=args.max_val, task=getattr(args, "task", None))
    dataset = {"val": data.val, "test": data.test, "train": data.train}[args.split]
    if dataset is None:
        from transferlab.errors import ConfigError

        raise ConfigError(f"{config.data} has no {args.split} split")
    device = resolve_device(config.train.device, fallback=True)
    model.to(device)
    if contamination is None:
        loader = ordered_loader(dataset, config.train.eval_batch_size, data.collate)
        result = evaluate(model, loader, device)
        print_json({"run": str(args.run), **({"task": args.task} if getattr(args, "task", None) else {}),
                    "data": config.data, "split": args.split, **result,
                    "skipped_inputs": data.skipped.count})
        return
    from transferlab.contamination.subsets import score_contamination

    # one pass: the same batches as evaluate(), so loss, accuracy and n are the numbers it gives
    examples, split = score_contamination(model, data, dataset, args.split, contamination, device,
                                          config.train.eval_batch_size)
    print_json({"run": str(args.run), "data": config.data, "split": args.split, **examples.summary,
                "skipped_inputs": data.skipped.count,
                "contamination": {"folder": contamination.folder, **split.to_dict()}})


def cmd_predict(args) -> None:
    """One TSV line per input: label, probability, input, error (empty when the input was read)."""
    from transferlab.data import DataError
    from transferlab.predict import predict_inputs, tsv_field

    failed = 0
    if getattr(args, "model", None):
        from transferlab.predict import predict_exported

        predictions = predict_exported(args.model, args.inputs)
    else:
        predictions = predict_inputs(args.run, args.inputs, task=getattr(args, "task", None))  # a refused input (a folder): one line, no header
    print("label\tprobability\tinput\terror")
    for p in predictions:
        failed += p.error is not None
        probability = "" if p.probability is None else f"{p.probability:.4f}"
        print("\t".join([tsv_field(p.label or ""), probability, tsv_field(p.input), tsv_field(p.error or "")]),
              flush=True)
    if failed:
        raise DataError(f"{failed} of {len(args.inputs)} inputs could not be read (see the error column)")
