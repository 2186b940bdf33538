"""Do the transferability metrics predict fine-tuned accuracy? The zoo study of docs/ranking.md.

Steps (each skipped when its output exists, so a killed study continues):
  1. pre-train resnet10_cifar on four CIFAR-10 sources drawn from the classes airplane..deer only (never a target
     class), keeping checkpoints: the zoo is their checkpoints plus the random initialisation (11 candidates of one
     architecture that differ in source classes, source size and length of pre-training);
  2. `transferlab rank` of the whole zoo on each target (timed: the cost of ranking);
  3. `transferlab finetune` of every candidate on each target with linear_probe and full, 3 seeds (test accuracy;
     timed: the cost of fine-tuning the zoo), two runs at a time with one thread each;
  4. per target, strategy and metric: scipy.stats.weightedtau (hyperbolic weights on rank, as TLlib reports it) and
     Pearson's r between the metric's scores and the candidates' mean test accuracy over seeds, with the range of
     the per-seed values as the spread.
Targets: the near target (dog, frog, horse, ship, truck: 100 training and 100 validation images per class, scored
on their 5,000 CIFAR-10 test images) and digits (the held-out image folder of benchmarks/_digits_folder.py).

Usage: python benchmarks/ranking_zoo.py [OUT_DIR]      (needs $TRANSFERLAB_DATA/cifar10; about an hour on 2 cores)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
TL = str(ROOT / ".venv" / "bin" / "transferlab")
PY = str(ROOT / ".venv" / "bin" / "python")
DATA = Path(os.environ.get("TRANSFERLAB_DATA", ROOT.parent / "shared" / "data"))
CIFAR = DATA / "cifar10"

# name: (source classes, extra pretrain options, epochs, checkpoints taken into the zoo)
SOURCES = {
    "all5": ("airplane,automobile,bird,cat,deer", [], 6, [1, 2, 4, 6]),
    "vehicles": ("airplane,automobile", [], 6, [2, 6]),
    "animals": ("bird,cat,deer", [], 6, [2, 6]),
    "all5_small": ("airplane,automobile,bird,cat,deer", ["--max-train", "2500"], 10, [4, 10]),
}
NEAR = ["--classes", "dog,frog,horse,ship,truck"]
TARGETS = {"near": NEAR + ["--max-train", "500", "--max-val", "500"], "digits": []}  # finetune's options
RANK_OPTS = {"near": NEAR, "digits": []}  # rank draws its own stratified 500 training examples
STRATEGIES = ["linear_probe", "full"]
SEEDS = [0, 1, 2]
FINETUNE_OPTS = ["--epochs", "5", "--batch-size", "32"]
METRICS = ["logme", "leep", "nce", "hscore", "knn", "linear"]


def sh(cmd: list[str], log: Path, threads: int = 2) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code:
        sys.exit(f"failed ({code}): {' '.join(cmd)}\n" + log.read_text()[-2000:])
    return time.perf_counter() - t0


def candidates(out: Path) -> dict[str, str]:
    zoo = {"scratch": f"{out / 'sources' / 'all5'}@scratch"}
    for name, (_, _, _, epochs) in SOURCES.items():
        for e in epochs:
            zoo[f"{name}@{e}"] = f"{out / 'sources' / name}@{e}"
    return zoo


def pretrain(out: Path) -> dict[str, float]:
    seconds = {}
    for name, (classes, extra, epochs, _) in SOURCES.items():
        run = out / "sources" / name
        done = out / "sources" / f"{name}.seconds"
        if not done.exists():
            resume = ["--resume"] if (run / "config.json").exists() else []
            print(f"pretrain {name} ({classes}, {epochs} epochs)", flush=True)
            t = sh([TL, "pretrain", "--data", str(CIFAR), "--classes", classes, *extra, "--val-fraction", "0.1",
                    "--epochs", str(epochs), "--checkpoint-every", "1", "--out", str(run), *resume],
                   out / "sources" / f"{name}.log")
            done.write_text(f"{t:.1f}")
        seconds[name] = float(done.read_text())
    return seconds


def target_data(out: Path, target: str) -> str:
    if target == "digits":
        folder = out / "digits_folder"
        if not (folder / "test").is_dir():
            subprocess.check_call([PY, str(ROOT / "benchmarks" / "_digits_folder.py"), str(folder)])
        return str(folder)
    return str(CIFAR)


def rank(out: Path, zoo: dict[str, str], target: str) -> tuple[dict, float]:
    folder = out / "rank" / target
    if not (folder / "ranking.json").exists():
        print(f"rank {len(zoo)} candidates on {target}", flush=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        t = sh([TL, "rank", "--models", ",".join(zoo.values()), "--data", target_data(out, target), *RANK_OPTS[target],
                "--max-examples", "500", "--out", str(folder), "--overwrite"], out / "rank" / f"{target}.log")
        (out / "rank" / f"{target}.seconds").write_text(f"{t:.1f}")
    report = json.loads((folder / "ranking.json").read_text())
    by_model = {c["model"]: c for c in report["candidates"]}
    scores = {name: {m: by_model[spec]["metrics"].get(m, {}).get("score") for m in METRICS}
              for name, spec in zoo.items()}
    return scores, float((out / "rank" / f"{target}.seconds").read_text())


def finetune_all(out: Path, zoo: dict[str, str]) -> None:
    jobs = []
    for target in TARGETS:
        for name, spec in zoo.items():
            for strategy in STRATEGIES:
                for seed in SEEDS:
                    run = out / "finetune" / target / name.replace("@", "_e") / strategy / str(seed)
                    if not (run / "metrics.json").exists():
                        jobs.append((target, spec, strategy, seed, run))
    print(f"{len(jobs)} fine-tuning runs to do", flush=True)

    def one(job):
        target, spec, strategy, seed, run = job
        run.parent.mkdir(parents=True, exist_ok=True)
        sh([TL, "finetune", "--model", spec, "--data", target_data(out, target), *TARGETS[target],
            "--strategy", strategy, "--seed", str(seed), *FINETUNE_OPTS, "--out", str(run), "--overwrite"],
           run.parent / f"{seed}.log", threads=1)
        print(f"  {target} {spec.rsplit('/', 1)[-1]} {strategy} seed {seed}: test "
              f"{json.loads((run / 'metrics.json').read_text())['test']['accuracy']:.4f}", flush=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, jobs))
    if jobs:  # wall seconds of the runs done by this call (two at a time), for the cost of fine-tuning the zoo
        with open(out / "finetune" / "seconds.txt", "a") as log:
            log.write(f"{len(jobs)} runs {time.perf_counter() - t0:.1f}\n")


def accuracies(out: Path, zoo: dict[str, str], target: str, strategy: str) -> tuple[dict, float]:
    acc, seconds = {}, 0.0
    for name in zoo:
        runs = [json.loads((out / "finetune" / target / name.replace("@", "_e") / strategy / str(s)
                            / "metrics.json").read_text()) for s in SEEDS]
        acc[name] = [r["test"]["accuracy"] for r in runs]
        seconds += sum(r["train_seconds"] for r in runs)
    return acc, seconds


def agreement(scores: dict, acc: dict, metric: str) -> dict:
    names = [n for n in acc if scores[n][metric] is not None]
    x = np.array([scores[n][metric] for n in names])
    if len(names) < 3 or np.ptp(x) == 0:
        return {"n": len(names), "weighted_tau": None, "pearson": None}
    mean = np.array([np.mean(acc[n]) for n in names])
    per_seed = np.array([[acc[n][i] for n in names] for i in range(len(SEEDS))])
    taus = [stats.weightedtau(x, a).statistic for a in per_seed]
    rs = [stats.pearsonr(x, a).statistic for a in per_seed]
    return {"n": len(names), "weighted_tau": float(stats.weightedtau(x, mean).statistic),
            "weighted_tau_seeds": [float(min(taus)), float(max(taus))],
            "pearson": float(stats.pearsonr(x, mean).statistic), "pearson_seeds": [float(min(rs)), float(max(rs))]}


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/transferlab_ranking_zoo")
    if not CIFAR.is_dir():
        sys.exit(f"needs $TRANSFERLAB_DATA/cifar10 (not found under {DATA}): see docs/data.md")
    (out / "sources").mkdir(parents=True, exist_ok=True)
    pretrain_seconds = pretrain(out)
    zoo = candidates(out)
    ranked = {t: rank(out, zoo, t) for t in TARGETS}
    finetune_all(out, zoo)
    result = {"candidates": list(zoo), "pretrain_seconds": pretrain_seconds, "targets": {}}
    for target in TARGETS:
        scores, rank_seconds = ranked[target]
        entry = {"rank_seconds": rank_seconds, "scores": scores, "strategies": {}}
        for strategy in STRATEGIES:
            acc, ft_seconds = accuracies(out, zoo, target, strategy)
            entry["strategies"][strategy] = {
                "accuracy": acc, "train_seconds": ft_seconds,
                "agreement": {m: agreement(scores, acc, m) for m in METRICS}}
        result["targets"][target] = entry
    lines = (out / "finetune" / "seconds.txt").read_text().split("\n")
    result["finetune_wall_seconds"] = sum(float(line.split()[-1]) for line in lines if line.strip())
    (out / "zoo.json").write_text(json.dumps(result, indent=1))
    print_tables(result)


def print_tables(result: dict) -> None:
    print("\n| target | strategy | " + " | ".join(METRICS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in METRICS) + " |")
    for target, entry in result["targets"].items():
        for strategy, s in entry["strategies"].items():
            cells = []
            for m in METRICS:
                a = s["agreement"][m]
                if a["weighted_tau"] is None:
                    cells.append(f"n/a ({a['n']} scored)")
                    continue
                lo, hi = a["weighted_tau_seeds"]
                rlo, rhi = a["pearson_seeds"]
                cells.append(f"tau {a['weighted_tau']:+.2f} [{lo:+.2f}, {hi:+.2f}], r {a['pearson']:+.2f} "
                             f"[{rlo:+.2f}, {rhi:+.2f}]")
            print(f"| {target} | {strategy} | " + " | ".join(cells) + " |")
    means = []
    for m in METRICS:
        taus = [s["agreement"][m]["weighted_tau"] for e in result["targets"].values() for s in e["strategies"].values()]
        taus = [t for t in taus if t is not None]
        means.append(f"{np.mean(taus):+.2f}" if taus else "n/a")
    print("| mean weighted tau | | " + " | ".join(means) + " |")
    print("\n| candidate | " + " | ".join(f"{t} {s}" for t in result["targets"] for s in STRATEGIES) + " |")
    print("| --- |" + " --- |" * (len(result["targets"]) * len(STRATEGIES)))
    for name in result["candidates"]:
        cells = [f"{np.mean(e['strategies'][s]['accuracy'][name]):.3f}" for e in result["targets"].values()
                 for s in STRATEGIES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ranking = sum(e["rank_seconds"] for e in result["targets"].values())
    ft = result["finetune_wall_seconds"]
    print(f"wall time, 2 cores: ranking {ranking:.0f} s (both targets, {len(result['candidates'])} candidates, two "
          f"commands); fine-tuning the zoo {ft:.0f} s, {ft / ranking:.0f}x ranking")


if __name__ == "__main__":
    main()
