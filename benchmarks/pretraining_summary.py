"""The tables of docs/pretraining.md from a finished `benchmarks/pretraining_study.sh` folder (numbers read back
from the runs' own files; nothing is computed here that the report did not state).

    .venv/bin/python benchmarks/pretraining_summary.py OUT_DIR
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def seconds(out: Path, step: str) -> str:
    f = out / f"{step}.seconds"
    return f"{int(f.read_text())} s" if f.is_file() else "?"


def source_table(out: Path) -> None:
    metrics = load(out / "source" / "metrics.json")
    kept = {e["epoch"] for e in load(out / "source" / "checkpoints" / "index.json")["epochs"]}
    history = [json.loads(line) for line in (out / "source" / "history.jsonl").read_text().splitlines()]
    print(f"### Source: {metrics['data']} ({', '.join(metrics['classes'])})\n")
    print(f"Best source validation epoch {metrics['best_epoch']}: val {metrics['val']['accuracy']:.4f} "
          f"(n={metrics['val']['n']}), **test {metrics['test']['accuracy']:.4f}** (n={metrics['test']['n']}); "
          f"training {metrics['train_seconds']:.0f} s, step wall time {seconds(out, 'pretrain')}.\n")
    print("| epoch | train acc | val acc | val loss | kept |\n|---|---|---|---|---|")
    for r in history:
        print(f"| {r['epoch']} | {r['train_accuracy']:.4f} | {r['val_accuracy']:.4f} | {r['val_loss']:.4f} | "
              f"{'yes' if r['epoch'] in kept else ''} |")
    print()


def curve_table(out: Path, name: str, title: str) -> None:
    if not (out / name / "results.json").is_file():
        print(f"### {title}\n\n(not run yet: no {out / name / 'results.json'})\n")
        return
    result = load(out / name / "results.json")
    s = result["summary"]
    scratch = s["scratch"]
    print(f"### {title} ({s['metric'].replace('_', ' ')}, step wall time {seconds(out, name + '_curve')})\n")
    if scratch:
        choice = result.get("scratch_choice") or {}
        recipe = choice.get("recipe")
        how = (f"`{choice['strategy']}` from the architecture's random weights, BatchNorm {recipe['bn_stats']}, "
               f"{recipe['lr_scale']:g}x the grid's learning rate: the best of {len(choice['candidates'])} recipes "
               f"on validation" if recipe else "`full` from random weights")
        print(f"From scratch ({how}): {scratch['mean']:.3f} ± {scratch['std']:.3f} ({scratch['n']} seeds).\n")
    epochs = [c["epoch"] for c in s["source_curve"]]
    print("| strategy | " + " | ".join(f"epoch {e}" for e in epochs) + " |")
    print("|---|" + "---|" * len(epochs))
    src = {c["epoch"]: c["source_val_accuracy"] for c in s["source_curve"]}
    print("| (source val acc) | " + " | ".join(f"{src[e]:.3f}" for e in epochs) + " |")
    for strategy, v in s["strategies"].items():
        by = {p["epoch"]: p for p in v["points"]}
        mark = {"hurts": " *", "helps": " +"}
        cells = [f"{by[e]['mean']:.3f} ± {by[e]['std']:.3f}" + mark.get(by[e]["verdict"], "")
                 if e in by else "" for e in epochs]
        print(f"| `{strategy}` | " + " | ".join(cells) + " |")
    print("\nmean ± std over seeds; + = above scratch beyond noise, * = below scratch beyond noise (negative "
          "transfer), by the statistics rule (paired on the test examples, Holm over the curve's gaps).\n")
    for strategy, v in s["strategies"].items():
        e, b = v["early_vs_last"], v["best"]
        print(f"- `{strategy}`: best checkpoint by target validation: epoch {b['epoch']} ({b['mean']:.3f}); "
              f"early-stopped (epoch {e['epoch']}) minus last (epoch {e['last_epoch']}): {e['difference']:+.3f} "
              f"[{e['low']:+.3f}, {e['high']:+.3f}] ({'beyond noise' if e['significant'] else 'within noise'})")
    print()


def forgetting_table(out: Path) -> None:
    rows = []
    for name in ("near", "forgetting"):
        f = out / name / "results.json"
        if f.is_file():
            rows += load(f)["forgetting"]
    if not rows:
        return
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["epoch"]), []).append(r)
    print(f"### Forgetting of the source task ({rows[0]['split']} split, {rows[0]['examples']} images)\n")
    print("| strategy | checkpoint epoch | seeds | source acc before | after | forgetting (± std) |")
    print("|---|---|---|---|---|---|")
    for (strategy, epoch), rs in sorted(groups.items()):
        drop = [r["forgetting"] for r in rs]
        std = statistics.stdev(drop) if len(drop) > 1 else 0.0
        print(f"| `{strategy}` | {epoch} | {len(rs)} | {rs[0]['accuracy_before']:.3f} | "
              f"{statistics.mean(r['accuracy_after'] for r in rs):.3f} | {statistics.mean(drop):+.3f} ± {std:.3f} |")
    print()


def main() -> None:
    out = Path(sys.argv[1])
    source_table(out)
    curve_table(out, "near", "Near target: dog, frog, horse, ship, truck (500 training images)")
    curve_table(out, "distant", "Distant target: digits at 32 px")
    forgetting_table(out)
    total = sum(int((out / f"{s}.seconds").read_text()) for s in ("pretrain", "near_curve", "distant_curve",
                                                                    "forgetting") if (out / f"{s}.seconds").is_file())
    print(f"Total wall time of the steps: {total} s ({total / 60:.1f} min).")


if __name__ == "__main__":
    main()
