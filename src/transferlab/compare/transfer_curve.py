"""The transfer curve: a target fine-tuned from every checkpoint a `pretrain` run kept, and from scratch.

OUT/curve.json            what was asked: the pre-training run, its kept epochs, strategies, seeds, the shared run
                          config (the marker of this folder)
OUT/grids/epoch_E/        one comparison grid per checkpoint (ordinary `finetune` cells: they resume and fail one
                          by one as a grid's do)
OUT/grids/scratch/        `full` from the architecture's random weights (the pre-training run's scratch entry:
                          the same input pipeline), one run per seed: the baseline of every gap
OUT/report.md, report.html, results.json, curve.csv, plots/transfer_curve.png

With `source_data`, every fine-tuned run's source-task accuracy before and after is measured on the source
data's test split (diagnostics.forgetting), so forgetting is read against pre-training length too.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from transferlab.compare.curve import curve_csv, curve_figure, curve_section, summarize_curve
from transferlab.compare.executor import run_grid
from transferlab.compare.grid import GridSpec
from transferlab.compare.results import collect
from transferlab.errors import ConfigError
from transferlab.models.pretrained_dir import CHECKPOINTS, INDEX_FILE, SCRATCH, epoch_folder_name, kept_entries
from transferlab.outputs import FolderKind, check_output_path, folder_state, foreign_message
from transferlab.progress import Progress
from transferlab.runs import RunConfig
from transferlab.safe_io import atomic_write_bytes, atomic_write_json, atomic_write_text
from transferlab.sections import Bullets, Section, Table, Text

logger = logging.getLogger(__name__)

CURVE_FORMAT = "transferlab-curve-1"
CURVE_FOLDER = FolderKind(
    name="transfer curve", marker="curve.json", formats=frozenset({CURVE_FORMAT}),
    files=frozenset({"curve.json", "curve.csv", "report.md", "report.html", "results.json"}),
    folders={"grids": frozenset(), "plots": frozenset({"transfer_curve.png"})})


def checkpoint_points(pretrained: Path) -> list[dict]:
    """The kept epochs of a pretrain run, with each one's source validation accuracy, in order."""
    entries = kept_entries(pretrained)
    if not entries:
        raise ConfigError(f"--pretrained {pretrained}: no kept checkpoints (no {CHECKPOINTS}/{INDEX_FILE}); run "
                          f"transferlab pretrain with --out {pretrained} first")
    if not (pretrained / CHECKPOINTS / SCRATCH).is_dir():
        raise ConfigError(f"--pretrained {pretrained}: no {CHECKPOINTS}/{SCRATCH} (the random-init entry the "
                          f"baseline starts from); is it a transferlab pretrain run?")
    return [{"checkpoint": epoch_folder_name(e["epoch"]), "epoch": e["epoch"],
             "source_val_accuracy": e.get("val_accuracy")} for e in entries]


def select_points(points: list[dict], wanted: list[str] | None) -> list[dict]:
    """The checkpoints named by --checkpoints: epochs, `last`, `best` (the highest source validation accuracy)."""
    if not wanted:
        return points
    by_epoch = {p["epoch"]: p for p in points}
    chosen = set()
    for name in wanted:
        name = name.strip()
        if name == "last":
            chosen.add(points[-1]["epoch"])
        elif name == "best":
            scored = [p for p in points if p["source_val_accuracy"] is not None]
            if not scored:
                raise ConfigError("--checkpoints best: the kept checkpoints record no source validation accuracy")
            chosen.add(max(scored, key=lambda p: (p["source_val_accuracy"], -p["epoch"]))["epoch"])
        elif name.isdigit() and int(name) in by_epoch:
            chosen.add(int(name))
        else:
            raise ConfigError(f"--checkpoints: {name!r} is not a kept epoch ({', '.join(map(str, by_epoch))}), "
                              f"last or best")
    return [p for p in points if p["epoch"] in chosen]


def transfer_curve(pretrained: str | Path, base: RunConfig, strategies: list[str], seeds: list[int],
                   out: str | Path, resume: bool = False, jobs: int = 1, source_data: str | None = None,
                   checkpoints: list[str] | None = None) -> dict:
    """Run (or continue) the curve and write its report; returns the summary written to results.json.
    `checkpoints` limits the kept epochs fine-tuned from (epochs, last, best); `source_data` is also what
    ewc estimates its Fisher information on."""
    pretrained = Path(pretrained).expanduser().resolve()
    if not pretrained.is_dir():
        raise ConfigError(f"--pretrained {pretrained}: no such folder")
    points = select_points(checkpoint_points(pretrained), checkpoints)
    if source_data:
        base.strategy_options = {**base.strategy_options, "source_data": source_data}
    out = check_output_path(out, "--out", {"--pretrained": str(pretrained), "--data": base.data,
                                           "--source-data": source_data})
    plan = {"format": CURVE_FORMAT, "pretrained": str(pretrained), "epochs": [p["epoch"] for p in points],
            "strategies": list(strategies), "seeds": list(seeds), "source_data": source_data,
            "base": base.to_dict()}
    plan = _check_out(out, plan, resume)
    if plan["epochs"] != [p["epoch"] for p in points]:  # a resumed curve runs what it asked for, nothing else
        every = {p["epoch"]: p for p in checkpoint_points(pretrained)}
        missing = [e for e in plan["epochs"] if e not in every]
        if missing:
            raise ConfigError(f"--resume: the curve in {out} was asked for checkpoints {missing} that "
                              f"{pretrained} no longer keeps")
        points = [every[e] for e in plan["epochs"]]
    GridSpec(base=base, strategies=plan["strategies"], seeds=plan["seeds"], scratch=False)  # specs checked first
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "curve.json", plan)
    base = RunConfig.from_dict(plan["base"])
    grids = [(p, pretrained / CHECKPOINTS / p["checkpoint"], plan["strategies"]) for p in points]
    # the baseline: the pre-training run's own random init, trained like compare's baseline (every parameter at
    # the base rate, its BatchNorm mode and learning rate chosen on validation: grid.SCRATCH_SEARCH)
    grids.append(({"checkpoint": SCRATCH, "epoch": None, "source_val_accuracy": None},
                  pretrained / CHECKPOINTS / SCRATCH, []))
    specs = []
    for point, folder, listed in grids:
        cfg = copy.deepcopy(base)
        cfg.model = str(folder)
        specs.append(GridSpec(base=cfg, strategies=listed, seeds=plan["seeds"], scratch=not listed,
                              scratch_init="given"))
    # One progress over every grid's runs and the report's forgetting measurements: the time left counts all.
    with Progress(logger) as progress:
        progress.add("run", sum((len(s.strategies) + len(s.scratch_candidates())) * len(s.seeds) for s in specs),
                     parallel=jobs)
        if plan.get("source_data"):
            progress.add("forgetting", len(points) * len(plan["strategies"]) * len(plan["seeds"]),
                         weight=FORGETTING_PER_RUN)
        for i, ((point, _, _), spec) in enumerate(zip(grids, specs)):
            grid_dir = out / "grids" / point["checkpoint"]
            progress.note(f"transfer curve {i + 1}/{len(grids)}: {point['checkpoint']}")
            run_grid(spec, grid_dir, resume=(grid_dir / "grid.json").is_file(), jobs=jobs, progress=progress)
        return write_curve_report(out, progress)


def _check_out(out: Path, plan: dict, resume: bool) -> dict:
    state = folder_state(out, CURVE_FOLDER)
    if state == "foreign":
        raise ConfigError(foreign_message(out, CURVE_FOLDER))
    if state == "ours" and not resume:
        raise ConfigError(f"{out} already holds a transfer curve; pass --resume to continue it, or choose another "
                          f"--out")
    if state == "new":
        if resume:
            raise ConfigError(f"--resume: {out} holds no transfer curve to continue")
        return plan
    saved = json.loads((out / "curve.json").read_text(encoding="utf-8"))
    differs = [k for k in ("pretrained", "epochs", "strategies", "seeds", "source_data") if saved.get(k) != plan[k]]
    if differs:
        logger.info("--resume: continuing the curve as it was asked (%s as saved)", ", ".join(differs))
    return saved


def curve_records(out: Path) -> tuple[list[dict], list[str], dict | None]:
    """One record per finished fine-tuning run of the curve (read back from the run folders), notes on the
    runs that did not finish, and how the baseline's recipe was chosen (results.select_scratch; None: no
    baseline yet)."""
    plan = json.loads((out / "curve.json").read_text(encoding="utf-8"))
    points = {p["checkpoint"]: p for p in checkpoint_points(Path(plan["pretrained"])) if p["epoch"] in plan["epochs"]}
    points[SCRATCH] = {"checkpoint": SCRATCH, "epoch": None, "source_val_accuracy": None}
    records, notes, choice = [], [], None
    for name, point in points.items():
        grid_dir = out / "grids" / name
        if not (grid_dir / "grid.json").is_file():
            notes.append(f"{name}: not run yet")
            continue
        results = collect(grid_dir, json.loads((grid_dir / "grid.json").read_text(encoding="utf-8")))
        selected = {r.run_dir for r in results.finished_runs(SCRATCH)} if name == SCRATCH else None
        for run in results.runs:
            if run.status != "finished":
                notes.append(f"{name} {run.strategy} seed {run.seed}: {run.error or run.status}")
                continue
            if selected is not None and run.run_dir not in selected:  # a baseline recipe that was not chosen
                continue
            records.append({**point, "strategy": SCRATCH if name == SCRATCH else run.strategy, "seed": run.seed,
                            "val_accuracy": run.val["accuracy"], "val_n": run.val["n"],
                            "test_accuracy": run.test["accuracy"] if run.test else None,
                            "test_n": run.test["n"] if run.test else None, "run_dir": run.run_dir,
                            **run_correct(run.run_dir)})
        if name == SCRATCH and results.scratch_choice:
            choice = results.scratch_choice
    return records, notes, choice


def run_correct(run_dir: str) -> dict:
    """The run's per-example correctness ({"val_correct", "test_correct"}: (N,) bool arrays), where it kept
    them, for paired comparisons in the curve (curve.py)."""
    from transferlab.runs import run_examples

    out = {}
    for split in ("val", "test"):
        kept = run_examples(run_dir, split)
        if kept is not None:
            out[f"{split}_correct"] = kept[0]
    return out


# A forgetting measurement's cost in runs, stated for the time left before the first one is timed: a guess (two
# evaluations of the source test split against a run's epochs of training), not a measurement.
FORGETTING_PER_RUN = 0.25


def forgetting_records(records: list[dict], source_data: str, progress: Progress | None = None) -> list[dict]:
    """Source-task test accuracy before and after each fine-tuning run (scratch runs have no source head).
    `progress`: the curve's, whose time left then counts these; by default one of their own."""
    from transferlab.diagnostics.forgetting import forgetting_for_run

    cache: dict = {}
    rows = []
    todo = [r for r in records if r["strategy"] != SCRATCH]
    own = progress is None
    progress = progress or Progress(logger)
    progress.add("forgetting", len(todo), weight=FORGETTING_PER_RUN)
    try:
        for i, r in enumerate(todo):
            progress.start("forgetting")
            progress.note(f"forgetting {i + 1}/{len(todo)}: {r['checkpoint']} {r['strategy']} seed {r['seed']}")
            rows.append(_forgetting_row(r, source_data, cache, forgetting_for_run))
            progress.finish("forgetting")
    finally:
        if own:
            progress.close()
    return rows


def _forgetting_row(r: dict, source_data: str, cache: dict, forgetting_for_run) -> dict:
    split = "test"
    try:
        f = forgetting_for_run(r["run_dir"], source_data=source_data, split=split, cache=cache)
    except ConfigError as exc:
        if "no test split" not in str(exc):
            raise
        split = "val"
        f = forgetting_for_run(r["run_dir"], source_data=source_data, split=split, cache=cache)
    return {"checkpoint": r["checkpoint"], "epoch": r["epoch"], "strategy": r["strategy"], "seed": r["seed"],
            "split": split, "examples": f.examples, "accuracy_before": f.accuracy_before,
            "accuracy_after": f.accuracy_after, "forgetting": f.forgetting}


def forgetting_section(rows: list[dict]) -> Section | None:
    """Mean source accuracy before/after per (strategy, checkpoint), with the seed spread of the forgetting."""
    import statistics

    if not rows:
        return None
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["epoch"]), []).append(r)
    table = []
    for (strategy, epoch), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        drop = [r["forgetting"] for r in rs]
        spread = f" ± {statistics.stdev(drop):.3f}" if len(drop) > 1 else ""
        table.append([strategy, str(epoch), str(len(rs)), f"{statistics.mean(r['accuracy_before'] for r in rs):.3f}",
                      f"{statistics.mean(r['accuracy_after'] for r in rs):.3f}",
                      f"{statistics.mean(drop):+.3f}{spread}"])
    split = rows[0]["split"]
    return Section("Forgetting of the source task along the curve", [
        Table(["strategy", "pre-training epoch", "seeds", "source acc. before", "after", "forgetting (± std)"],
              table),
        Text(f"Source-task accuracy of each checkpoint's own source head, before fine-tuning and after (the "
             f"fine-tuned backbone with the original source head), on the {split} split of the source data "
             f"({rows[0]['examples']} examples); forgetting = before - after, mean over seeds.")], data={"runs": rows})


def write_curve_report(out: str | Path, progress: Progress | None = None) -> dict:
    """`progress`: the curve's (transfer_curve), whose time left then counts the forgetting measurements."""
    from transferlab.compare.report import render_html, render_markdown

    out = Path(out)
    plan = json.loads((out / "curve.json").read_text(encoding="utf-8"))
    records, notes, choice = curve_records(out)
    if not records:
        raise ConfigError(f"{out}: no fine-tuning run of the curve finished ({'; '.join(notes[:3])})")
    summary = summarize_curve(records)
    sections = {"transfer_curve": curve_section(summary)}
    forgetting = forgetting_records(records, plan["source_data"], progress) if plan.get("source_data") else []
    section = forgetting_section(forgetting)
    if section is not None:
        sections["curve_forgetting"] = section
    if notes:
        sections["curve_notes"] = Section("Runs that did not finish", [Bullets(notes)])
    sections["curve_inputs"] = Section("What was run", [Text(
        f"Pre-training run {plan['pretrained']} (kept epochs {', '.join(map(str, plan['epochs']))}); target "
        f"{plan['base']['data']}; strategies {', '.join(plan['strategies'])}; seeds "
        f"{', '.join(map(str, plan['seeds']))}. Each cell is an ordinary run under grids/<checkpoint>/runs/."
        + (f" The from-scratch baseline is the pre-training run's random init trained with `{choice['strategy']}`, "
           f"BatchNorm statistics {choice['recipe']['bn_stats']} and {choice['recipe']['lr_scale']:g}x the learning "
           f"rate: {choice['rule']} (among {len(choice['candidates'])} recipes)." if choice else ""))])
    title = f"Transfer curve: {Path(plan['pretrained']).name} checkpoints on {plan['base']['data']}"
    figure = curve_figure(summary)
    atomic_write_bytes(out / "plots" / "transfer_curve.png", figure)
    atomic_write_text(out / "report.md", render_markdown(None, sections, title=title, footer=(
        "Numbers: results.json and curve.csv; each run's own metrics.json under grids/.")))
    atomic_write_text(out / "report.html", render_html(None, sections, title=title))
    atomic_write_text(out / "curve.csv", curve_csv(summary))
    result = {"format": CURVE_FORMAT, "summary": summary, "forgetting": forgetting, "notes": notes,
              "records": [{k: v for k, v in r.items() if not k.endswith("_correct")} for r in records],
              "scratch_choice": choice}
    atomic_write_json(out / "results.json", result)
    return result
