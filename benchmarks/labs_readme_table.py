"""The README's lab table from one `transferlab lab run all --out OUT`: one row per lab, its claim, its verdict and
each check's mean ± sd with its verdict, read from OUT/<lab>/result.json (nothing is computed here).

    .venv/bin/python benchmarks/labs_readme_table.py OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _g(x: float) -> str:
    return f"{x:+.3g}"


def main(out: Path) -> None:
    print("| lab | claim | verdict | checks |")
    print("| --- | --- | --- | --- |")
    from transferlab.labs.registry import LABS

    for lab in LABS:  # the registry's order, as `lab list` and the labs page show them
        result = out / lab.name / "result.json"
        if not result.is_file():
            continue
        r = json.loads(result.read_text())
        checks = "; ".join(f"{c['name']}: {_g(c['stats']['mean'])} ± {c['stats']['sd']:.2g} ({c['verdict']})"
                           for c in r["checks"])
        print(f"| [`{r['lab']}`](docs/labs.md#lab-{r['lab']}) | {r['claim']} | **{r['verdict']}** | {checks} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
