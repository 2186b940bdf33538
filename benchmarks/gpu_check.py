"""The GPU paths, checked with the commands a user runs: one table, in a few minutes on one GPU (under 8 on an H100).

    .venv/bin/python benchmarks/gpu_check.py [--out gpu_check_out] [--cases fp16,fp16_resume] [--quick]
    .venv/bin/python benchmarks/gpu_check.py --dry-run      # the commands, without running them (no GPU needed)

Every case runs real `transferlab` commands (`python -m transferlab ...` with this Python, in a subprocess) on small
real inputs: the bundled digits at 64 px with efficientnet_lite0, and hymenoptera when $TRANSFERLAB_DATA holds it.
Each case reports ok, failed (the error's last line) or skipped (why), its seconds and its numbers; a failing case
does not stop the others, and the exit code is 1 when any failed. The table is printed and written to
OUT/gpu_check.json and OUT/gpu_check.md, each command's output to OUT/logs/. On a machine without CUDA the script
prints one line and exits 0.

Cases (see CASE_HELP): fp32, bf16, fp16 (one GPU, each precision; fp16 goes through the GradScaler), fp16_resume
(an fp16 run killed mid-epoch by the fault hook, then --resume, against the uninterrupted run), memory_format
(channels_last against contiguous), nproc1 / nproc2 (a real NCCL group of 1, of 2 when two GPUs are visible), cache
(linear_probe with the frozen-prefix cache against --no-cache), ray (compare --executor ray --gpus-per-cell 1),
overhead (benchmarks/trainer_overhead.py: the Trainer against a plain loop on the GPU), hymenoptera.

Tolerances. Bit equality between two GPU runs cannot be expected: cuDNN and cuBLAS pick kernels per shape and
some (the weight gradient of convolutions, reductions with atomics) add in a different order on each run, and after
a few dozen steps those last-bit differences show in the loss. So a comparison that should be exact on paper (a
resumed run against an uninterrupted one) is held to the difference measured between two uninterrupted runs in
the same call, doubled, and at least one validation example of accuracy and 0.5% of the loss; when the two
uninterrupted runs are bit-equal, the resumed one must be too. Comparisons that change the kernels on purpose
(memory layout, precision) are held to 2 points of accuracy (7 of the 360 validation images).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SKIP_LINE = "no CUDA device: the GPU checks are skipped"
HERE = Path(__file__).resolve().parent
OVERHEAD_SCRIPT = HERE / "trainer_overhead.py"
MODEL = "efficientnet_lite0"
BATCH = 32
LAYOUT_ACC_TOL = 0.02  # memory layout: other kernels on purpose, so other rounding (see the docstring)
RESUME_LOSS_FLOOR = 0.005  # relative; and one validation example of accuracy
CACHE_LOSS_TOL = 1e-3  # relative: cached features come from batches of another size (other kernels)
MIN_ACCURACY = 0.15  # 10 classes (chance 0.1, loss ln 10 = 2.30): 2 short epochs on 8x8 digits reach ~0.25-0.9
CHANCE_LOSS = math.log(10)

CASE_HELP = {
    "fp32": "finetune --device cuda, fp32: runs, learns, its samples/s and peak memory",
    "bf16": "the same with --precision bf16 (autocast): accuracy against fp32",
    "fp16": "the same with --precision fp16 (autocast and the GradScaler): skipped steps, accuracy against fp32",
    "fp16_resume": "fp16 killed mid-epoch by TRANSFERLAB_FAULT=kill_at_step, then --resume: equal to the "
                   "uninterrupted run (tolerance: two uninterrupted runs' difference)",
    "memory_format": "--memory-format channels_last against contiguous (bf16, 128 px): samples/s ratio, accuracy",
    "nproc1": "--nproc 1: one process in a real NCCL group (the collectives); world_size, accuracy against fp32",
    "nproc2": "--nproc 2 --sync-bn (two GPUs): world_size 2, global batch 32, SyncBatchNorm",
    "cache": "linear_probe with the frozen-prefix cache against --no-cache: same metrics, speed ratio",
    "ray": "compare --executor ray --gpus-per-cell 1 (2 strategies, 1 seed): every cell finished, the report",
    "overhead": "benchmarks/trainer_overhead.py --device cuda: the Trainer's samples/s over a plain loop's",
    "hymenoptera": "finetune on $TRANSFERLAB_DATA/hymenoptera (224 px, bf16): real images on the GPU",
}
CASES = list(CASE_HELP)


@dataclass(frozen=True)
class Command:
    """One command line: `python -m transferlab ARGV` (or `python SCRIPT ARGV`), with extra environment."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    script: str | None = None  # a benchmark script instead of transferlab
    expect: int = 0  # the exit code that means it went as planned (-9: killed by the fault hook)
    timeout: int = 180

    def full(self) -> list[str]:
        return [sys.executable, *((self.script,) if self.script else ("-m", "transferlab")), *self.argv]

    def text(self) -> str:
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env), shlex.join(self.full())])

    def out(self) -> Path:
        argv = list(self.argv)
        return Path(argv[argv.index("--out") + 1]) if "--out" in argv else Path()


@dataclass
class Outcome:
    command: Command
    code: int | None
    seconds: float
    log: str

    @property
    def ok(self) -> bool:
        return self.code == self.command.expect

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.log.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("transferlab: error:")]
        what = errors[-1] if errors else (lines[-1] if lines else "(no output)")
        return f"exit code {self.code} (expected {self.command.expect}): {what}"


class CaseFailed(Exception):
    pass


class CaseSkipped(Exception):
    pass


@dataclass
class Context:
    """What the cases share: the settings, where runs go, and the commands already run (a case that needs a run
    another case made, with the same command line, reuses it)."""

    runs: Path
    logs: Path | None
    quick: bool
    device: str = "cuda"
    dry: bool = False
    planned: list[Command] = field(default_factory=list)
    done: dict[Command, Outcome] = field(default_factory=dict)

    # ---- settings -----------------------------------------------------------------------------------------------
    @property
    def max_train(self) -> int:
        return 384 if self.quick else 1024

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.max_train / BATCH)

    def finetune(self, name: str, *extra: str, epochs: int = 2, image_size: int = 64, data: str = "digits",
                 max_train: int | None = -1, batch_size: int = BATCH) -> Command:
        max_train = self.max_train if max_train == -1 else max_train
        argv = ["finetune", "--model", MODEL, "--data", data, "--image-size", str(image_size), "--epochs",
                str(epochs), "--batch-size", str(batch_size), "--seed", "0", "--device", self.device,
                *(["--max-train", str(max_train)] if max_train else []), *extra, "--out", str(self.runs / name)]
        return Command(tuple(argv))

    # ---- running --------------------------------------------------------------------------------------------------
    def plan(self, *commands: Command) -> None:
        """A case names every command it may run before running any: a dry run stops here, having listed them."""
        self.planned.extend(commands)
        if self.dry:
            raise CaseSkipped("dry run")

    def run(self, command: Command, label: str) -> Outcome:
        """Run `command` (once per call of the script: the same command line again returns the first outcome)."""
        if command in self.done:
            return self.done[command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERLAB_FAULT")}
        env.update(dict(command.env))
        start = time.perf_counter()
        try:
            proc = subprocess.run(command.full(), env=env, capture_output=True, text=True, timeout=command.timeout,
                                  cwd=HERE.parent)
            code, log = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = None
            log = f"{_text(exc.stdout)}{_text(exc.stderr)}\ntimed out after {command.timeout} s"
        outcome = Outcome(command, code, time.perf_counter() - start, log)
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            (self.logs / f"{label}.log").write_text(f"$ {command.text()}\n{log}", encoding="utf-8")
        self.done[command] = outcome
        return outcome

    def run_ok(self, command: Command, label: str) -> Outcome:
        outcome = self.run(command, label)
        if not outcome.ok:
            raise CaseFailed(f"{label}: {outcome.last_line()}")
        return outcome


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def metrics(outcome: Outcome) -> dict:
    return json.loads((outcome.command.out() / "metrics.json").read_text())


def history(outcome: Outcome) -> list[dict]:
    lines = (outcome.command.out() / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def speed(outcome: Outcome) -> float:
    """Training samples/s of the last epoch: the first one includes cuDNN's and the allocator's warm-up."""
    return history(outcome)[-1]["samples_per_second"]


def learned(m: dict, label: str) -> None:
    """A GPU path that computes garbage (NaN, a wrong layout, a scaler that skips every step) trains nothing: the
    validation loss stays at chance. The bar is low on purpose: a check of the path, not of the recipe."""
    val = m["val"]
    if not math.isfinite(val["loss"]) or val["loss"] >= CHANCE_LOSS or val["accuracy"] < MIN_ACCURACY:
        raise CaseFailed(f"{label}: validation accuracy {val['accuracy']:.3f}, loss {val['loss']:.4g}: it did not "
                         f"learn (expected a loss under {CHANCE_LOSS:.3f}, chance, and accuracy >= {MIN_ACCURACY})")


def summary(outcome: Outcome, label: str) -> dict:
    m = metrics(outcome)
    learned(m, label)
    return {"val_acc": round(m["val"]["accuracy"], 4), "val_loss": round(m["val"]["loss"], 4),
            "samples/s": round(speed(outcome), 1), "peak_mb": round(m.get("peak_memory_mb") or 0.0),
            "skipped_steps": len(m.get("skipped_steps") or [])}


# ---- the cases ----------------------------------------------------------------------------------------------------
def case_precision(ctx: Context, precision: str) -> dict:
    command, fp32 = ctx.finetune(precision, "--precision", precision), ctx.finetune("fp32", "--precision", "fp32")
    ctx.plan(*dict.fromkeys((command, fp32)))
    outcome = ctx.run_ok(command, precision)
    numbers = summary(outcome, precision)
    m = metrics(outcome)
    if m.get("precision") != precision:
        raise CaseFailed(f"{precision}: metrics.json says precision {m.get('precision')!r}")
    if precision != "fp32":
        ref = ctx.run(fp32, "fp32")
        if ref.ok:
            numbers["val_acc_minus_fp32"] = round(m["val"]["accuracy"] - metrics(ref)["val"]["accuracy"], 4)
    return numbers


def case_fp16_resume(ctx: Context) -> dict:
    spe = ctx.steps_per_epoch
    every, kill = max(1, spe // 4), spe + spe // 2  # the kill falls in epoch 2, after a mid-epoch checkpoint
    precision = "fp16" if ctx.device.startswith("cuda") else "fp32"  # --device cpu: checks the script only
    ckpt = ("--precision", precision, "--checkpoint-every-steps", str(every))
    plain_cmd = ctx.finetune(precision, "--precision", precision)  # the fp16 case's command: run once for both
    whole_cmd = ctx.finetune("fp16_whole", *ckpt)
    killed_cmd = ctx.finetune("fp16_killed", *ckpt)
    killed = Command(killed_cmd.argv, env=(("TRANSFERLAB_FAULT", f"kill_at_step:{kill}"),), expect=-9)
    resume_cmd = Command((*killed_cmd.argv, "--resume"))
    ctx.plan(plain_cmd, whole_cmd, killed, resume_cmd)
    plain = ctx.run_ok(plain_cmd, "fp16")  # the fp16 case's run: the two uninterrupted runs' difference
    whole = ctx.run_ok(whole_cmd, "fp16_resume.whole")
    ctx.run_ok(killed, "fp16_resume.killed")
    if not (killed.out() / "checkpoint" / "last.safetensors").is_file():
        raise CaseFailed("fp16_resume: the killed run left no checkpoint/last.safetensors")
    resumed = ctx.run_ok(resume_cmd, "fp16_resume.resumed")
    a, b, r = metrics(whole), metrics(plain), metrics(resumed)
    learned(r, "fp16_resume")
    n = a["val"]["n"]
    noise_acc = abs(a["val"]["accuracy"] - b["val"]["accuracy"])
    noise_loss = abs(a["val"]["loss"] - b["val"]["loss"])
    d_acc = abs(r["val"]["accuracy"] - a["val"]["accuracy"])
    d_loss = abs(r["val"]["loss"] - a["val"]["loss"])
    exact = noise_acc == 0 and noise_loss == 0
    tol_acc = 0.0 if exact else max(2 * noise_acc, 1 / n)
    tol_loss = 0.0 if exact else max(2 * noise_loss, RESUME_LOSS_FLOOR * abs(a["val"]["loss"]))
    numbers = {"killed_at_step": kill, "checkpoint_every": every, "val_acc": round(r["val"]["accuracy"], 4),
               "uninterrupted_acc": round(a["val"]["accuracy"], 4), "d_acc": round(d_acc, 4), "d_loss": f"{d_loss:.2e}",
               "noise_acc": round(noise_acc, 4), "noise_loss": f"{noise_loss:.2e}", "bit_equal_runs": exact,
               "skipped_steps": f"{len(r.get('skipped_steps') or [])}/{len(a.get('skipped_steps') or [])}"}
    if d_acc > tol_acc or d_loss > tol_loss:
        raise CaseFailed(f"fp16_resume: the resumed run differs from the uninterrupted one by {d_acc:.4f} accuracy "
                         f"and {d_loss:.3g} loss; allowed {tol_acc:.4f} and {tol_loss:.3g} ({numbers})")
    return numbers


def case_memory_format(ctx: Context) -> dict:
    size = 64 if ctx.quick else 128
    commands = {fmt: ctx.finetune(f"layout_{fmt}", "--precision", "bf16", "--memory-format", fmt, image_size=size)
                for fmt in ("channels_last", "contiguous")}
    ctx.plan(*commands.values())
    runs = {fmt: ctx.run_ok(command, f"memory_format.{fmt}") for fmt, command in commands.items()}
    cl, co = (metrics(runs[f]) for f in ("channels_last", "contiguous"))
    learned(cl, "channels_last")
    learned(co, "contiguous")
    numbers = {"image_size": size, "channels_last_sps": round(speed(runs["channels_last"]), 1),
               "contiguous_sps": round(speed(runs["contiguous"]), 1),
               "ratio": round(speed(runs["channels_last"]) / speed(runs["contiguous"]), 3),
               "d_acc": round(cl["val"]["accuracy"] - co["val"]["accuracy"], 4)}
    if abs(numbers["d_acc"]) > LAYOUT_ACC_TOL:
        raise CaseFailed(f"memory_format: accuracy differs by {numbers['d_acc']} (allowed {LAYOUT_ACC_TOL}): {numbers}")
    return numbers


def case_nproc(ctx: Context, n: int) -> dict:
    extra = ("--nproc", str(n)) if n == 1 else ("--nproc", str(n), "--sync-bn")
    command = ctx.finetune(f"nproc{n}", *extra, batch_size=BATCH // n)  # per process: global batch 32
    fp32 = ctx.finetune("fp32", "--precision", "fp32")
    ctx.plan(command, fp32)
    if not ctx.dry:
        import torch

        if torch.cuda.device_count() < n:
            raise CaseSkipped(f"{torch.cuda.device_count()} GPU(s) visible, {n} needed")
    outcome = ctx.run_ok(command, f"nproc{n}")
    numbers = summary(outcome, f"nproc{n}")
    m = metrics(outcome)
    numbers.update(world_size=m.get("world_size"), global_batch=m.get("global_batch_size"))
    if m.get("world_size") != n or m.get("global_batch_size") != BATCH:
        raise CaseFailed(f"nproc{n}: world_size {m.get('world_size')}, global batch {m.get('global_batch_size')}; "
                         f"expected {n} and {BATCH}")
    ref = ctx.run(fp32, "fp32")
    if ref.ok:
        numbers["val_acc_minus_1gpu"] = round(m["val"]["accuracy"] - metrics(ref)["val"]["accuracy"], 4)
    return numbers


def case_cache(ctx: Context) -> dict:
    epochs = 3 if ctx.quick else 5
    on_cmd = ctx.finetune("probe_cache", "--strategy", "linear_probe", epochs=epochs)
    off_cmd = ctx.finetune("probe_nocache", "--strategy", "linear_probe", "--no-cache", epochs=epochs)
    ctx.plan(on_cmd, off_cmd)
    on, off = ctx.run_ok(on_cmd, "cache.on"), ctx.run_ok(off_cmd, "cache.off")
    a, b = metrics(on), metrics(off)
    learned(a, "cache")
    cached = max(record.get("cached_groups", 0) for record in history(on))

    def cost(m):  # the training loop and the one-off feature computation
        return m["train_seconds"] + (m.get("cache_seconds") or 0.0)

    d_loss = abs(a["val"]["loss"] - b["val"]["loss"]) / abs(b["val"]["loss"])
    d_acc = abs(a["val"]["accuracy"] - b["val"]["accuracy"])
    numbers = {"epochs": epochs, "cached_groups": cached, "val_acc": round(a["val"]["accuracy"], 4),
               "val_acc_nocache": round(b["val"]["accuracy"], 4), "rel_d_loss": f"{d_loss:.1e}",
               "speedup": round(cost(b) / cost(a), 2), "wall_speedup": round(off.seconds / on.seconds, 2)}
    if not cached:
        raise CaseFailed(f"cache: no depth group was cached ({numbers})")
    if d_acc > 1 / a["val"]["n"] or d_loss > CACHE_LOSS_TOL:
        raise CaseFailed(f"cache: cached and uncached differ by {d_acc:.4f} accuracy, {d_loss:.1e} relative loss "
                         f"(allowed one example and {CACHE_LOSS_TOL:g}): {numbers}")
    return numbers


def case_ray(ctx: Context) -> dict:
    out = ctx.runs / "ray_grid"
    argv = ("compare", "--model", MODEL, "--data", "digits", "--image-size", "64", "--epochs", "1",
            "--max-train", "128" if ctx.quick else "256", "--strategies", "linear_probe,full", "--seeds", "1",
            "--no-scratch", "--device", ctx.device, "--executor", "ray", "--gpus-per-cell", "1", "--out", str(out))
    command = Command(argv, timeout=300)
    ctx.plan(command)
    if not ctx.dry:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise CaseSkipped('Ray is not installed (pip install "transferlab[cluster]")')
    outcome = ctx.run_ok(command, "ray")
    results = json.loads((out / "results.json").read_text())
    runs = list((out / "runs").glob("*/*/metrics.json"))
    numbers = {"cells_finished": f"{len(runs)}/2", "report": (out / "report.md").is_file(),
               "strategies": ",".join(sorted(str(k) for k in (results.get("strategies") or {})))
               if isinstance(results.get("strategies"), dict) else None}
    numbers = {k: v for k, v in numbers.items() if v is not None}
    if len(runs) != 2 or not numbers["report"]:
        raise CaseFailed(f"ray: {numbers}; {outcome.last_line()}")
    return numbers


def case_overhead(ctx: Context) -> dict:
    out = ctx.runs / "overhead.json"
    command = Command(("--device", ctx.device, "--cases", "efficientnet_lite0_digits", "--repeats",
                       "2" if ctx.quick else "3", "--json", str(out)), script=str(OVERHEAD_SCRIPT), timeout=240)
    ctx.plan(command)
    ctx.run_ok(command, "overhead")
    row = json.loads(out.read_text())["rows"][0]
    return {"plain_sps": round(row["plain_samples_per_second"], 1),
            "transferlab_sps": round(row["transferlab_samples_per_second"], 1), "ratio": round(row["ratio"], 3),
            "repeats": row["repeats"]}


def case_hymenoptera(ctx: Context) -> dict:
    from transferlab.data import data_root

    root = data_root(None)
    folder = root / "hymenoptera" if root is not None else None
    shown = str(folder) if folder is not None else "$TRANSFERLAB_DATA/hymenoptera"
    command = ctx.finetune("hymenoptera", "--precision", "bf16", data=shown, image_size=224, max_train=None)
    ctx.plan(command)
    if folder is None or not folder.is_dir():
        raise CaseSkipped(f"no {shown} (set TRANSFERLAB_DATA, docs/data.md)")
    return summary(ctx.run_ok(command, "hymenoptera"), "hymenoptera")


RUNNERS = {
    "fp32": lambda ctx: case_precision(ctx, "fp32"),
    "bf16": lambda ctx: case_precision(ctx, "bf16"),
    "fp16": lambda ctx: case_precision(ctx, "fp16"),
    "fp16_resume": case_fp16_resume,
    "memory_format": case_memory_format,
    "nproc1": lambda ctx: case_nproc(ctx, 1),
    "nproc2": lambda ctx: case_nproc(ctx, 2),
    "cache": case_cache,
    "ray": case_ray,
    "overhead": case_overhead,
    "hymenoptera": case_hymenoptera,
}


# ---- the table ------------------------------------------------------------------------------------------------------
def run_case(ctx: Context, name: str) -> dict:
    start = time.perf_counter()
    row = {"case": name, "status": "ok", "seconds": 0.0, "numbers": {}, "error": None}
    try:
        row["numbers"] = RUNNERS[name](ctx)
    except CaseSkipped as exc:
        row.update(status="skipped", error=str(exc))
    except CaseFailed as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:  # a broken case (missing file, parse error) is a failed case, not a stopped script
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _numbers_text(row: dict) -> str:
    if row["status"] != "ok":
        return row["error"] or ""
    return ", ".join(f"{k}={v}" for k, v in row["numbers"].items())


def table(rows: list[dict]) -> str:
    width = max(len(r["case"]) for r in rows)
    lines = [f"{'case':<{width}}  {'status':<8}{'seconds':>8}  numbers"]
    lines += [f"{r['case']:<{width}}  {r['status']:<8}{r['seconds']:>8.1f}  {_numbers_text(r)}" for r in rows]
    return "\n".join(lines)


def markdown(header: dict, rows: list[dict]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"GPU check: {header['device_name']}, torch {header['torch']}, CUDA {header['cuda']}, "
             f"{header['gpus']} GPU(s), {'--quick' if header['quick'] else 'full'}, {header['seconds']:.0f} s", "",
             "| case | status | seconds | numbers |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['status']} | {r['seconds']:.1f} | {cell(_numbers_text(r))} |" for r in rows]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="check transferlab's GPU paths with real commands; one table",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="cases:\n" + "\n".join(f"  {k:<14}{v}" for k, v in CASE_HELP.items()))
    parser.add_argument("--out", default="gpu_check_out", help="where the table (gpu_check.json, gpu_check.md) and "
                                                               "the commands' logs go (default: gpu_check_out)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats: about half the time")
    parser.add_argument("--dry-run", action="store_true", help="print each case's commands, run nothing")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run folders, in OUT/runs")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu runs the commands on the CPU, "
                                                         "which only checks this script (fp16 needs CUDA; "
                                                         "fp16_resume runs in fp32 there)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in RUNNERS]
    if unknown:
        print(f"error: unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    if args.dry_run:
        ctx = Context(runs=Path(args.out) / "runs", logs=None, quick=args.quick, device=args.device, dry=True)
        for name in cases:
            ctx.planned.clear()
            run_case(ctx, name)
            for command in ctx.planned:
                print(f"{name}\t{command.text()}")
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        runs = (out / "runs") if args.keep_runs else Path(tmp)
        ctx = Context(runs=runs.absolute(), logs=(out / "logs").absolute(), quick=args.quick, device=args.device)
        cuda = args.device.startswith("cuda")
        header = {"device_name": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                  "cuda": torch.version.cuda, "gpus": torch.cuda.device_count() if cuda else 0, "quick": args.quick}
        print(f"GPU check on {header['device_name']} (torch {header['torch']}, CUDA {header['cuda']}, "
              f"{header['gpus']} GPU(s)): {', '.join(cases)}", file=sys.stderr, flush=True)
        start, rows = time.perf_counter(), []
        for i, name in enumerate(cases, 1):
            rows.append(run_case(ctx, name))
            print(f"[{i}/{len(cases)}] {name}: {rows[-1]['status']} ({rows[-1]['seconds']:.1f} s)", file=sys.stderr,
                  flush=True)
        header["seconds"] = time.perf_counter() - start
    print(f"{header['device_name']}, torch {header['torch']}, CUDA {header['cuda']}, {header['gpus']} GPU(s), "
          f"{header['seconds']:.0f} s")
    print(table(rows))
    (out / "gpu_check.json").write_text(json.dumps({**header, "cases": rows}, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(header, rows), encoding="utf-8")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
