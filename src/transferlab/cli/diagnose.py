"""Diagnostics commands: `diagnose drift|forgetting|bn-shift|frequency|probe`, `adapt-bn`, `export-source`."""
from __future__ import annotations

from transferlab.cli._common import format_number, print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("diagnose", help="what fine-tuning did: feature drift, forgetting, BatchNorm shift")
    dsub = p.add_subparsers(dest="diagnostic", required=True)

    d = dsub.add_parser("drift", help="per depth group: relative weight change and CKA to the pre-trained model")
    d.add_argument("--run", required=True, help="run directory")
    d.add_argument("--data", help="target data (default: the run's own; same classes)")
    d.add_argument("--split", choices=["val", "test", "train"], default="val")
    d.add_argument("--max-batches", type=_at_least_one, help="use at most this many evaluation batches (>= 1)")
    d.add_argument("--batch-size", type=int, help="minibatch size for CKA, at least 4 (the unbiased estimator's "
                                                   "minimum; default: the run's eval batch size)")
    d.add_argument("--plot", metavar="FILE.png", help="write CKA and weight change by depth as a PNG")
    d.add_argument("--json", action="store_true", help='print {"groups": [{"name", "weight_change", "cka"}]}')
    d.set_defaults(func=cmd_drift)

    f = dsub.add_parser("forgetting", help="source-task accuracy before/after fine-tuning (or agreement proxy)")
    f.add_argument("--run", required=True)
    f.add_argument("--source-data", help="labelled source data: class folders named by source class index or "
                                         "ImageNet name, or digits:0-4; without it, the agreement proxy")
    f.add_argument("--split", choices=["val", "test", "train"], default="val")
    f.add_argument("--class-map", help="NAME=INDEX,... source class index per class folder, e.g. ants=310")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_forgetting)

    b = dsub.add_parser("bn-shift", help="per BatchNorm layer: symmetric KL of target vs running statistics")
    who = b.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="run directory (its selected weights)")
    who.add_argument("--model", help="a pre-trained model by name")
    b.add_argument("--data", required=True)
    b.add_argument("--split", choices=["val", "test", "train"], default="val")
    b.add_argument("--image-size", type=int, help="with --model: input size (default: the model's)")
    b.add_argument("--max-batches", type=_at_least_one, help="use at most this many batches (>= 1)")
    b.add_argument("--plot", metavar="FILE.png", help="write the shift by layer depth as a PNG")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bn_shift)

    from transferlab.cli import diagnose_frequency, diagnose_probe

    diagnose_frequency.register(dsub)
    diagnose_probe.register(dsub)

    a = sub.add_parser("adapt-bn", help="AdaBN: re-estimate BatchNorm statistics on unlabelled target data")
    a.add_argument("--run", required=True)
    a.add_argument("--data", required=True, help="target data with the run's classes (labels are not used)")
    a.add_argument("--split", choices=["train", "val", "test"], default="train",
                   help="which split's images to estimate the statistics on")
    a.add_argument("--out", required=True, help="new run directory (transferlab evaluate --run OUT works on it)")
    a.add_argument("--source-weight", type=float, default=0.0,
                   help="mix w of the stored statistics back in: w*source + (1-w)*target (default 0: AdaBN)")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=cmd_adapt_bn)

    e = sub.add_parser("export-source", help="a run's backbone + head as a --weights file whose head becomes "
                                             "the source head (sequential-task experiments)")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True, help="FILE.safetensors")
    e.add_argument("--overwrite", action="store_true", help="replace an existing FILE.safetensors")
    e.set_defaults(func=cmd_export_source)


def _at_least_one(text: str) -> int:
    """An argparse type: zero batches would read no example, and the command would print empty results."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value} (leave it out to use every batch)")
    return value


def cmd_drift(args) -> None:
    from transferlab.diagnostics.drift import drift_for_run, plot_drift
    from transferlab.outputs import check_plot_path

    plot = check_plot_path(args.plot, inputs={"--data": args.data})  # before minutes of work
    result = drift_for_run(args.run, args.data, split=args.split, max_batches=args.max_batches,
                           batch_size=args.batch_size)
    if plot:
        plot_drift([result], plot)
    if args.json:
        print_json({"groups": [{"name": g.name, "weight_change": g.weight_change, "cka": g.cka}
                               for g in result.groups], "examples": result.examples, "note": result.note})
        return
    if result.note:
        print(f"note: {result.note}")
    print_table([["group", "weight_change", "cka"]] +
           [[g.name, format_number(g.weight_change), format_number(g.cka)] for g in result.groups])
    print(f"({result.examples} {result.split} examples of {result.data}, {result.batches} minibatches; "
          f"{result.estimator})")


def _class_map(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    from transferlab.errors import ConfigError

    out = {}
    for item in text.split(","):
        name, eq, index = item.partition("=")
        if not eq or not index.strip().isdigit():
            raise ConfigError(f"--class-map: expected NAME=INDEX, got {item!r}")
        out[name.strip()] = int(index)
    return out


def cmd_forgetting(args) -> None:
    from transferlab.diagnostics.forgetting import forgetting_for_run

    r = forgetting_for_run(args.run, args.source_data, split=args.split, class_map=_class_map(args.class_map))
    if args.json:
        print_json(r.to_dict())
        return
    if r.mode == "agreement_proxy":
        print(f"source-head agreement (original vs fine-tuned backbone) on {r.examples} target inputs: "
              f"{r.agreement:.4f}\n(a proxy without source data: 1.0 = the source head still sees the same "
              f"features; pass --source-data for source-task accuracy)")
        return
    print(f"source task {r.data} ({r.split}, {r.examples} examples, source classes {r.source_classes}):")
    print(f"  accuracy before {r.accuracy_before:.4f}  after {r.accuracy_after:.4f}  "
          f"forgetting {r.forgetting:+.4f}")
    print(f"  among the present source classes only: before {r.restricted_accuracy_before:.4f}  "
          f"after {r.restricted_accuracy_after:.4f}; agreement {r.agreement:.4f}")


def cmd_bn_shift(args) -> None:
    from transferlab.diagnostics.bn import bn_shift_for, plot_bn_shift
    from transferlab.outputs import check_plot_path

    plot = check_plot_path(args.plot, inputs={"--data": args.data})
    r = bn_shift_for(args.data, run_dir=args.run, model_name=args.model, split=args.split,
                     image_size=args.image_size, max_batches=args.max_batches)
    if plot:
        plot_bn_shift([r], plot)
    if args.json:
        print_json(r.to_dict())
        return
    print_table([["#", "layer", "group", "channels", "sym_kl"]] +
           [[str(x.index), x.name, x.group, str(x.channels), f"{x.skl:.4g}"] for x in r.layers])
    print(f"mean symmetric KL over {len(r.layers)} BatchNorm layers: {r.mean_skl:.4g} "
          f"({r.examples} {r.split} examples of {r.data})")


def cmd_adapt_bn(args) -> None:
    from transferlab.diagnostics.adabn import adapt_bn_run

    r = adapt_bn_run(args.run, args.data, args.out, split=args.split, overwrite=args.overwrite,
                     source_weight=args.source_weight)
    print_json(r.to_dict())
    print(f"adapted run written to {args.out}; evaluate it with: transferlab evaluate --run {args.out}")


def cmd_export_source(args) -> None:
    from transferlab.diagnostics.source import export_source_weights

    print_json(export_source_weights(args.run, args.out, overwrite=args.overwrite))
