"""`transferlab diagnose probe`: linear-probe accuracy per depth group, before and after fine-tuning."""
from __future__ import annotations

from transferlab.cli._common import format_number, print_json, print_table


def register(dsub) -> None:
    """Add the `probe` subcommand to `transferlab diagnose`."""
    from transferlab.diagnostics.probe import MAX_TRAIN

    p = dsub.add_parser("probe", help="per depth group: accuracy of a linear probe (logistic regression) on its "
                                      "output, pre-trained vs fine-tuned")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="run directory: probes its pre-trained reference and its selected weights")
    who.add_argument("--model", help="a pre-trained model by name (needs --data): probes it alone")
    p.add_argument("--data", help="data to probe on (with --run: default the run's own; same classes)")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="evaluation split shown in the table and the plot (every split is probed)")
    p.add_argument("--max-train", type=int, default=MAX_TRAIN,
                   help=f"fit each probe on at most this many training examples, a stratified subset "
                        f"(default: {MAX_TRAIN})")
    p.add_argument("--image-size", type=int, help="with --model: input size (default: the model's)")
    p.add_argument("--max-length", type=int, help="with --model on text: truncate to this many tokens")
    p.add_argument("--batch-size", type=int, help="forward-pass batch size (default: the run's eval batch size, "
                                                  "or 64)")
    p.add_argument("--c-grid", metavar="C,C,...", help="choose the probe's C per group from these by val "
                                                        "accuracy (needs --split test; default: C = 1)")
    p.add_argument("--plot", metavar="FILE.png", help="write probe accuracy by depth group as a PNG")
    p.add_argument("--json", action="store_true",
                   help='print {"entries": {label: {"groups": [{"name", "index", "dim", "train_accuracy", '
                        '"val_accuracy", "test_accuracy"}]}}, "examples", "estimator"}')
    p.set_defaults(func=cmd_probe)


def _c_grid(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    from transferlab.errors import ConfigError

    try:
        return tuple(float(c) for c in text.split(","))
    except ValueError:
        raise ConfigError(f"--c-grid: expected comma-separated numbers like 0.1,1,10, got {text!r}") from None


def cmd_probe(args) -> None:
    from transferlab.diagnostics.probe import plot_probe, probe_for
    from transferlab.outputs import check_plot_path

    plot = check_plot_path(args.plot, inputs={"--data": args.data, "--run": args.run})  # before the work
    result = probe_for(args.run, args.model, args.data, split=args.split, max_train=args.max_train,
                       image_size=args.image_size, max_length=args.max_length, batch_size=args.batch_size,
                       c_grid=_c_grid(args.c_grid))
    if plot:
        plot_probe(result, plot)
    if args.json:
        print_json(result.to_dict())
        return
    _print_table(result)


def _print_table(result) -> None:
    from transferlab.diagnostics.probe import accuracy_of

    labels = list(result.entries)
    headers = ["group", "dim"] + [f"{label} {s}" for label in labels for s in ("train", result.split)]
    deepest = max(result.entries.values(), key=lambda e: len(e.groups)).groups
    rows = []
    for g in deepest:
        row = [g.name, str(g.dim)]
        for label in labels:
            mine = next((x for x in result.entries[label].groups if x.index == g.index), None)
            row += ["-", "-"] if mine is None else [format_number(mine.train_accuracy, ".3f"),
                                                    format_number(accuracy_of(mine, result.split), ".3f")]
        rows.append(row)
    if result.note:
        print(f"note: {result.note}")
    print_table([headers] + rows)
    ex = result.examples
    baseline = result.majority_baseline.get(result.split)
    print(f"({ex['train']} of {ex['train_available']} train and {ex[result.split]} {result.split} examples of "
          f"{result.data}; majority class {format_number(baseline, '.3f')} on {result.split}; {result.estimator})")

