"""The frequency response as pictures: the plot of `diagnose frequency --plot` and the comparison report's
section "frequency" (the measurements are in `diagnostics.frequency`)."""
from __future__ import annotations

import math
from pathlib import Path

from transferlab.diagnostics.frequency import (
    BANDS,
    FREQUENCIES,
    PRETRAINED,
    FrequencyEntry,
    FrequencyResult,
    frequency_for,
)
from transferlab.errors import ConfigError
from transferlab.diagnostics.registry import arg, one_of, register_diagnostic, section
from transferlab.sections import Bullets, Figure, Section, Table, Text

REPORT_FREQUENCIES = 8  # the comparison report: every strategy, so kept cheap
REPORT_GROUPS = 3  # depth groups 0..2 in the report
TABLE_COLUMNS = 4  # grating frequencies shown in the plain table of `diagnose frequency` (the JSON has them all)


def _floor(values, eps: float = 1e-6) -> list[float]:
    """Values for a log axis: zero (a filter's exact null) shown at eps."""
    return [max(v, eps) if not math.isnan(v) else v for v in values]


def _draw_gains(ax, groups: dict[str, dict], colours=None) -> None:
    cmap = colours or _depth_colours(len(groups))
    for (name, curve), colour in zip(groups.items(), cmap):
        ax.plot(curve["frequency"], _floor(curve["gain"]), color=colour, marker=".", lw=1, label=name)
    ax.axhline(1.0, color="grey", lw=0.7, ls=":")
    ax.set_yscale("log")
    ax.set_xlim(0, 0.5)
    ax.set_xlabel("grating frequency (cycles/pixel)")


def _depth_colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def plot_frequency(result: FrequencyResult, path: str | Path) -> Path:
    """One column per entry: the first convolution's radial spectrum over its white level (top: 1 = the flat
    spectrum of a white kernel of the same energy) and each depth group's grating gain by frequency (bottom, log
    scale, coloured by depth); saved as PNG."""
    from transferlab.diagnostics._common import save_figure
    from transferlab.figures import new_figure

    n = len(result.entries)
    fig, axes = new_figure(2, n, figsize=(4.2 * n, 7), squeeze=False, sharey="row")
    for col, (label, entry) in enumerate(result.entries.items()):
        top, bottom = axes[0][col], axes[1][col]
        k = entry.kernels
        if k is not None:
            top.plot(k.frequency, _floor([p / k.white_level for p in k.power]), marker="o", color="black")
            b = k.bands
            top.set_title(f"{label}\n{k.module} {'x'.join(map(str, k.shape))}: low {b['low']:.2f} "
                          f"mid {b['middle']:.2f} high {b['high']:.2f}", fontsize=8)
        else:
            top.set_title(f"{label}\n(no convolution in depth group 0)", fontsize=8)
        top.set_yscale("log")
        top.set_xlim(0, 0.5)
        top.set_xlabel("radial frequency (cycles/pixel)")
        top.axhline(1.0, color="grey", lw=0.7, ls=":")
        _draw_gains(bottom, entry.groups)
        bottom.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel("kernel power / white level")
    axes[1][0].set_ylabel("gain (1 = as white noise of equal power)")
    return save_figure(fig, path)


# ---- report section -------------------------------------------------------------------------------------
def band_mean(curve: dict, band: str) -> float | None:
    """Mean gain over the grid frequencies of a kernel band ("low": f < 1/8, "high": f >= 1/4)."""
    lo, hi = next((lo, hi) for name, lo, hi in BANDS if name == band)
    gains = [g for f, g in zip(curve["frequency"], curve["gain"]) if lo <= f < hi]
    return sum(gains) / len(gains) if gains else None


def frequency_section(ctx) -> Section | None:
    from transferlab.diagnostics._common import figure_png, first_finished_runs

    title = "Frequency responses of the early layers"
    results, notes = {}, []
    for name, run_dir in first_finished_runs(ctx, "frequency"):
        try:
            results[name] = frequency_for(run_dir, frequencies=REPORT_FREQUENCIES, noise_draws=4,
                                          random_init=False, cache=ctx.cache)
        except ConfigError as exc:
            if "frequency responses are measured on image models only" in str(exc):
                notes.append(f"{name}: a text model, no frequency response")
            else:
                notes.append(f"{name}: not computed ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001  a diagnostic must not sink the report
            notes.append(f"{name}: not computed ({type(exc).__name__}: {exc})")
            continue
        notes += [f"{name}: {n}" for n in results[name].notes]
    if not results:
        return Section(title, [Text("Not computed: " + ("; ".join(notes) or "no finished runs"))])
    first = next(iter(results.values()))
    reference = {"pre-trained": first.entries[PRETRAINED]} if PRETRAINED in first.entries else {}
    lines = reference | {name: r.entries[r.main] for name, r in results.items()}
    groups = list(first.entries[first.main].groups)[:REPORT_GROUPS]
    blocks = [Figure("frequency", figure_png(_section_figure(lines, groups)),
                     f"Grating gain of depth groups {', '.join(groups)} by frequency (cycles per pixel of the "
                     f"{first.image_size} px input): the mean square response to grey sinusoidal gratings over "
                     f"that to white noise of equal power (1 = passes the frequency as broadband noise; log "
                     f"scale), the pre-trained reference against each strategy's fine-tuned model (first seed)."),
              Table(_headers(groups), [_row(label, e, groups) for label, e in lines.items()], css_class="small"),
              Text("Gain low / high: the mean gain over grating frequencies below 1/8 and from 1/4 cycles per "
                   "pixel. Kernel high: the fraction of the first convolution's kernel power at radial "
                   "frequencies from 1/4 (a white kernel has about 0.80).")]
    if notes:
        blocks.append(Bullets(notes))
    data = {name: r.to_dict() for name, r in results.items()} | {"notes": notes}
    return Section(title, blocks, data=data)


def _section_figure(lines: dict[str, FrequencyEntry], groups: list[str]):
    from transferlab.figures import new_figure

    fig, axes = new_figure(1, len(groups), figsize=(3.6 * len(groups), 3.2), squeeze=False, sharey="row")
    for ax, group in zip(axes[0], groups):
        for label, entry in lines.items():
            curve = entry.groups.get(group)
            if curve is None:
                continue
            style = {"color": "black", "ls": "--"} if label == "pre-trained" else {}
            ax.plot(curve["frequency"], _floor(curve["gain"]), marker=".", label=label, **style)
        ax.axhline(1.0, color="grey", lw=0.7, ls=":")
        ax.set_yscale("log")
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("cycles/pixel")
    axes[0][0].set_ylabel("grating gain")
    axes[0][-1].legend(fontsize=7)
    return fig


def _headers(groups: list[str]) -> list[str]:
    return ["model"] + [f"{g} gain {b}" for g in groups for b in ("low", "high")] + ["kernel high"]


def _row(label: str, entry: FrequencyEntry, groups: list[str]) -> list[str]:
    row = [label]
    for g in groups:
        curve = entry.groups.get(g)
        row += [_fmt(band_mean(curve, b) if curve else None) for b in ("low", "high")]
    return row + [_fmt(entry.kernels.bands["high"] if entry.kernels else None)]


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


# ---- the command (transferlab.diagnostics.registry) ------------------------------------------------------
@register_diagnostic(
    "frequency", order=40, help="per depth group: gain for sinusoidal gratings by frequency, and the "
                                "first convolution's kernel spectrum (fine-tuned, pre-trained, random)",
    arguments=[
        one_of(arg("--run", help="run directory: its fine-tuned model, pre-trained reference and a random init"),
               arg("--model", help="a model by name (registry, timm, pretrained folder): it and a random init"),
               required=True),
        arg("--weights", help="with --model: a weights file, as for finetune --weights"),
        arg("--compare-to", nargs="+", default=[], metavar="RUN_OR_MODEL",
            help="more runs (their fine-tuned model) or model names, added as entries"),
        arg("--image-size", type=int, help="input side in pixels (default: the run's or the model's)"),
        arg("--frequencies", type=int, default=FREQUENCIES,
            help=f"grating frequencies 0.5 i / N cycles per pixel, i = 1..N (default: {FREQUENCIES})"),
        arg("--no-random-init", action="store_true", help="leave out the random-init entry"),
        arg("--plot", metavar="FILE.png", help="write kernel spectra and gain curves, one column per entry"),
        arg("--json", action="store_true",
            help='print {"groups": {name: {"frequency", "gain"}}, "kernels": {"frequency", "power", '
                 '"bands"}, "entries": {label: {"groups", "kernels"}}, ...} (the first entry on top)'),
    ],
    section=section("frequency", order=69, build=frequency_section))
def cmd_frequency(args) -> None:
    from transferlab.console import print_json
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
    from transferlab.console import print_table

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
