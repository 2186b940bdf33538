"""Diagnostics commands: `diagnose NAME` for every registered diagnostic (drift, forgetting, bn-shift, frequency,
probe, domain-gap: each declared with its options in its own file, transferlab.diagnostics.registry), `adapt-bn`,
`adapt` (test-time adaptation: adabn, tent),
`export-source`."""
from __future__ import annotations

from transferlab.cli._common import print_json


def register(sub) -> None:
    p = sub.add_parser("diagnose", help="what fine-tuning did: feature drift, forgetting, BatchNorm shift")
    dsub = p.add_subparsers(dest="diagnostic", required=True)

    from transferlab.diagnostics.registry import list_diagnostics

    for diagnostic in list_diagnostics():  # one sub-command per registered diagnostic, declared in its own file
        diagnostic.add_parser(dsub)

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

    t = sub.add_parser("adapt", help="test-time adaptation to shifted, unlabelled data: adabn or tent")
    t.add_argument("--run", required=True)
    t.add_argument("--data", required=True, help="shifted data with the run's classes (labels are not used to adapt)")
    t.add_argument("--method", choices=["adabn", "tent"], required=True,
                   help="adabn: re-estimate BatchNorm statistics; tent: entropy minimisation of the BatchNorm "
                        "weights and biases (Wang et al. 2021)")
    t.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="the split adapted on (its images, in order) and scored (accuracy before and after)")
    t.add_argument("--steps", type=int, default=1, help="tent: updates per batch (--online) or passes (offline)")
    t.add_argument("--lr", type=float, default=1e-3, help="tent: Adam learning rate")
    t.add_argument("--online", action="store_true", help="tent: adapt on each batch, then predict it")
    t.add_argument("--reset", action="store_true", help="tent --online: restore the source weights before each "
                                                        "batch (episodic)")
    t.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    t.add_argument("--seed", type=int, default=0, help="the order of the stream: the split is shuffled by it")
    t.add_argument("--out", required=True, help="new run directory (transferlab evaluate --run OUT works on it)")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_adapt)

    e = sub.add_parser("export-source", help="a run's backbone + head as a --weights file whose head becomes "
                                             "the source head (sequential-task experiments)")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True, help="FILE.safetensors")
    e.add_argument("--overwrite", action="store_true", help="replace an existing FILE.safetensors")
    e.set_defaults(func=cmd_export_source)


def cmd_adapt_bn(args) -> None:
    from transferlab.diagnostics.adabn import adapt_bn_run

    r = adapt_bn_run(args.run, args.data, args.out, split=args.split, overwrite=args.overwrite,
                     source_weight=args.source_weight)
    print_json(r.to_dict())
    print(f"adapted run written to {args.out}; evaluate it with: transferlab evaluate --run {args.out}")


def cmd_adapt(args) -> None:
    from transferlab.diagnostics.tta import TentConfig, adapt_run

    tent = None
    if args.method == "tent" or (args.steps, args.lr, args.online, args.reset) != (1, 1e-3, False, False):
        tent = TentConfig(steps=args.steps, lr=args.lr, online=args.online, reset=args.reset)
    r = adapt_run(args.run, args.data, args.out, method=args.method, split=args.split, tent=tent,
                  batch_size=args.batch_size, overwrite=args.overwrite, seed=args.seed)
    print_json({k: v for k, v in r.to_dict().items() if not k.startswith("correct_")})  # those: adapt.json
    if r.accuracy_before is None:  # a stream without labels
        print(f"mean prediction entropy on {args.data} ({r.examples} unlabelled examples): {r.entropy_before:.3f} "
              f"-> {r.entropy_after:.3f} nats ({r.method}); adapted run written to {args.out}")
        return
    print(f"accuracy on {args.data} ({r.split}, {r.examples} examples): {r.accuracy_before:.3f} -> "
          f"{r.accuracy_after:.3f} ({r.method}); adapted run written to {args.out}")


def cmd_export_source(args) -> None:
    from transferlab.diagnostics.source import export_source_weights

    print_json(export_source_weights(args.run, args.out, overwrite=args.overwrite))
