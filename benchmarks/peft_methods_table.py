"""One Markdown table from a `compare` grid of PEFT methods: each strategy's accuracy over seeds, its difference
to a reference strategy (default `full`) under the project's statistics rule (paired on the examples, Holm over
the methods), trainable share, training samples per second and task-module size.

    .venv/bin/python benchmarks/peft_methods_table.py GRID_DIR [--reference full]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from transferlab import stats
from transferlab.compare.results import collect


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("--reference", default="full")
    args = ap.parse_args()
    out = Path(args.grid)
    results = collect(out, json.loads((out / "grid.json").read_text()))
    metric = results.metric
    others = [s for s in results.strategies if s != args.reference and results.summaries[s].runs]
    raw = [results.compare(s, args.reference) for s in others]
    tested = [c for c in raw if c is not None]
    adjusted = iter(stats.holm(tested))
    diffs = [next(adjusted) if c is not None else None for c in raw]
    print(f"{results.model} on {results.data}: {metric.replace('_', ' ')} (n = "
          f"{results.summaries[args.reference].n.get(metric)}), mean ± sd over seeds; difference to "
          f"`{args.reference}` with the 95% interval and the Holm-adjusted verdict ({stats.RULE})\n")
    print("| strategy | seeds | accuracy | - full (95% CI) | verdict | trainable share | samples/s | task module |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(args.reference, None)] + list(zip(others, diffs))
    for strategy, diff in rows:
        s = results.summaries[strategy]
        m, sd = s.mean, s.std
        module = f"{m['task_module_bytes'] / 1e3:,.0f} kB" if m.get("task_module_bytes") else "-"
        if diff is None:
            gap, verdict = "-", "-"
        else:
            gap = f"{diff.estimate * 100:+.1f} pt [{diff.low * 100:+.1f}, {diff.high * 100:+.1f}]"
            verdict = diff.verdict
        failed = f" ({s.failed} failed)" if s.failed else ""
        print(f"| `{strategy}` | {s.runs}{failed} | {m[metric]:.3f} ± {sd[metric]:.3f} | {gap} | {verdict} | "
              f"{100 * m['trainable_share']:.2f}% | {m['samples_per_second']:.1f} | {module} |")


if __name__ == "__main__":
    main()
