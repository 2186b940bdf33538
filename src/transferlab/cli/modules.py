"""`transferlab modules list|show|merge|export`: task modules written by lora, adapter and bitfit runs."""
from __future__ import annotations

from pathlib import Path

from transferlab.cli._common import print_json
from transferlab.units import escape_control


def register(sub) -> None:
    p = sub.add_parser("modules", help="task modules of parameter-efficient runs: list, show, merge, export")
    commands = p.add_subparsers(dest="modules_command", required=True)

    q = commands.add_parser("list", help="find task modules under folders (default: the current folder)")
    q.add_argument("roots", nargs="*", default=["."], metavar="DIR")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_list)

    q = commands.add_parser("show", help="a module's method, base model, trainable parameters, size on disk")
    q.add_argument("module", metavar="PATH", help="task-module folder, or a run directory holding one")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)

    q = commands.add_parser("merge", help="one module: fold it (LoRA, BitFit, peft:<type>) into the base weights, "
                                          "a plain run directory whose outputs equal the module's within 1e-5; "
                                          "several: merge their backbone updates into one multi-task module "
                                          "(each task keeps its head; predict/evaluate --task NAME)")
    q.add_argument("module", metavar="PATH", nargs="+")
    q.add_argument("--method", choices=["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "svd"],
                   help="how several modules merge (default linear: the weighted mean; svd: LoRA only)")
    q.add_argument("--weights", metavar="W1,W2,...", help="one weight per module (default 1/n for linear and svd, "
                                                            "1 otherwise)")
    q.add_argument("--density", type=float, metavar="D", help="share of each task vector kept by ties/dare "
                                                              "(default 0.5)")
    q.add_argument("--names", metavar="A,B,...", help="task names (default: each module's run folder name)")
    q.add_argument("--out", required=True, help="folder for config.json + checkpoint/best.safetensors")
    q.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    q.set_defaults(func=cmd_merge)

    q = commands.add_parser("export", help="copy a module into a standalone folder with a README on loading it "
                                           "(with peft for LoRA)")
    q.add_argument("module", metavar="PATH")
    q.add_argument("--out", required=True)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_export)


def _human(n: int) -> str:
    """Binary units spelled as such (KiB = 1024 B), as every command and the comparison report write them."""
    from transferlab.units import human_bytes

    return human_bytes(n)


def cmd_list(args) -> None:
    from transferlab.modules import find_modules, module_summary

    rows = [module_summary(d) for d in find_modules(args.roots)]
    if args.json:
        print_json(rows)
        return
    if not rows:
        print(f"no task modules under {', '.join(args.roots)}")
        return
    print(f"{'method':<8} {'base':<20} {'classes':>7} {'trainable':>11} {'share':>7} {'size':>9}  path")
    for r in rows:
        print(f"{r['method']:<8} {Path(str(r['base_model'])).name[:20]:<20} {len(r['classes']):>7} "
              f"{r['trainable_params']:>11,d} {100 * r['trainable_share']:>6.2f}% {_human(r['bytes']):>9}  {r['path']}")


def cmd_show(args) -> None:
    from transferlab.modules import module_summary

    s = module_summary(args.module)
    if args.json:
        print_json(s)
        return
    share = ""
    if s["share_of_full_checkpoint"]:
        share = (f" = {100 * s['share_of_full_checkpoint']:.2f}% of a full checkpoint "
                 f"({_human(s['full_checkpoint_bytes'])})")
    print(f"task module   {s['path']}")
    print(f"method        {s['spec']}  (run strategy: {s['run_strategy']})")
    print(f"base model    {s['base_model']}  ({s['architecture']}, weights: {s['base_weights'] or 'bundled'})")
    print(f"fingerprint   sha256 {s['fingerprint']}")
    print(f"classes       {len(s['classes'])}: {escape_control(', '.join(map(str, s['classes'][:10])))}"
          f"{' ...' if len(s['classes']) > 10 else ''}")
    print(f"trainable     {s['trainable_params']:,d} of {s['total_params']:,d} parameters "
          f"({100 * s['trainable_share']:.3f}%)")
    print(f"size on disk  {_human(s['bytes'])}{share}")
    for name, size in s["files"].items():
        print(f"  {name:<28} {_human(size):>9}")
    print(f"mergeable     {'yes (transferlab modules merge)' if s['mergeable'] else 'no (attach it instead)'}")


def cmd_merge(args) -> None:
    from transferlab.errors import ConfigError
    from transferlab.modules import merge_modules, write_merged

    if len(args.module) > 1 or args.method or args.weights or args.density is not None or args.names:
        weights = None
        if args.weights is not None:
            try:
                weights = [float(w) for w in args.weights.split(",")]
            except ValueError:
                raise ConfigError(f"--weights {args.weights!r}: give numbers separated by commas") from None
        names = args.names.split(",") if args.names else None
        report = merge_modules(args.module, args.out, method=args.method or "linear", weights=weights,
                               density=args.density, names=names, overwrite=args.overwrite)
        print_json(report)
        print(f"multi-task module written to {args.out} (use it with: transferlab predict --run {args.out} "
              f"--task {report['tasks'][0]} ..., transferlab evaluate --run {args.out} --task NAME)")
        return
    args.module = args.module[0]
    report = write_merged(args.module, args.out, overwrite=args.overwrite)
    print_json(report)
    data = "" if report.get("data") else " --data DATA"  # the module recorded no data set to evaluate on
    print(f"merged model written to {args.out} (evaluate it with: transferlab evaluate --run {args.out}{data})")


def cmd_export(args) -> None:
    from transferlab.modules import export_module

    out = export_module(args.module, args.out, overwrite=args.overwrite)
    print(f"task module exported to {out} (README.md there says how to load it)")
