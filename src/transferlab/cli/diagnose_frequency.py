"""`transferlab diagnose frequency`: what the early layers pass or filter out, as frequency responses."""
from __future__ import annotations

from pathlib import Path

from transferlab.cli._common import print_json, print_table

TABLE_COLUMNS = 4  # grating frequencies shown in the plain table (the JSON has them all)


def register(dsub) -> None:
    """Add the `frequency` subcommand to `transferlab diagnose`."""
    from transferlab.diagnostics.frequency import FREQUENCIES

    p = dsub.add_parser("frequency", help="per depth group: gain for sinusoidal gratings by frequency, and the "
                                          "first convolution's kernel spectrum (fine-tuned, pre-trained, random)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="run directory: its fine-tuned model, pre-trained reference and a random init")
    who.add_argument("--model", help="a model by name (registry, timm, pretrained folder): it and a random init")
    p.add_argument("--weights", help="with --model: a weights file, as for finetune --weights")
    p.add_argument("--compare-to", nargs="+", default=[], metavar="RUN_OR_MODEL",
                   help="more runs (their fine-tuned model) or model names, added as entries")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the run's or the model's)")
    p.add_argument("--frequencies", type=int, default=FREQUENCIES,
                   help=f"grating frequencies 0.5 i / N cycles per pixel, i = 1..N (default: {FREQUENCIES})")
    p.add_argument("--no-random-init", action="store_true", help="leave out the random-init entry")
    p.add_argument("--plot", metavar="FILE.png", help="write kernel spectra and gain curves, one column per entry")
    p.add_argument("--json", action="store_true",
                   help='print {"groups": {name: {"frequency", "gain"}}, "kernels": {"frequency", "power", '
                        '"bands"}, "entries": {label: {"groups", "kernels"}}, ...} (the first entry on top)')
    p.set_defaults(func=cmd_frequency)


def cmd_frequency(args) -> None:
    from transferlab.diagnostics.frequency import frequency_for
    from transferlab.diagnostics.frequency_report import plot_frequency
    from transferlab.outputs import check_plot_path

    from transferlab.models._factory import check_input_size

    plot = check_plot_path(args.plot, inputs={"--run": args.run, "--weights": args.weights})  # before the work
    for model in ([args.model] if args.model else []) + [m for m in args.compare_to if not Path(m).is_dir()]:
        check_input_size(model, args.weights if model == args.model else None, args.image_size)
    result = frequency_for(args.run, args.model, compare_to=args.compare_to, image_size=args.image_size,
                           frequencies=args.frequencies, weights=args.weights,
                           random_init=not args.no_random_init)
    if plot:
        plot_frequency(result, plot)
    if args.json:
        print_json(result.to_dict())
        return
    _print_result(result)


def _columns(n: int) -> list[int]:
    """Indices of at most TABLE_COLUMNS frequencies spread over the grid, the first and the last included."""
    if n <= TABLE_COLUMNS:
        return list(range(n))
    return sorted({round(i * (n - 1) / (TABLE_COLUMNS - 1)) for i in range(TABLE_COLUMNS)})


def _print_result(result) -> None:
    for n in result.notes:
        print(f"note: {n}")
    for label, entry in result.entries.items():
        print(f"{label}: grating gain by depth group (1 = as much as white noise of equal power)")
        if entry.groups:
            grid = next(iter(entry.groups.values()))["frequency"]
            cols = _columns(len(grid))
            print_table([["group"] + [f"f={grid[i]:.3g}" for i in cols]] +
                   [[name, *(f"{c['gain'][i]:.3g}" for i in cols)] for name, c in entry.groups.items()])
        k = entry.kernels
        if k is not None:
            b, w = k.bands, k.bands_white
            print(f"first conv {k.module} ({'x'.join(map(str, k.shape))}, stride {'x'.join(map(str, k.stride))}): "
                  f"kernel energy low {b['low']:.3f}  middle {b['middle']:.3f}  high {b['high']:.3f}  "
                  f"(white kernel {w['low']:.2f} / {w['middle']:.2f} / {w['high']:.2f})")
        print()
    print(f"({result.image_size} px gratings, frequencies in cycles per pixel; bands: low < 1/8, middle < 1/4, "
          f"high >= 1/4)")
