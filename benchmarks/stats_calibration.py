"""How often transferlab.stats calls noise a difference, and how often it finds a real one: simulated experiments.

    .venv/bin/python benchmarks/stats_calibration.py [--reps 2000]

Prints one table: per setting, the share of null experiments called "differs" / "supported" (should be at most
5%), and the share of experiments with a real effect that are found (power). The simulated evaluation: N test
examples with a difficulty shared by both strategies (logit ~ N(1.2, 1.5)), each training run with a random
effect of its own (logit ~ N(0, 0.2)), per-example correctness ~ Bernoulli(sigmoid(difficulty + run + effect)).
tests/stats/test_calibration.py asserts the same bounds with fewer repetitions.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.special import expit

from transferlab.stats import paired_runs, seed_test, unpaired_accuracies


def simulate(rng, reps: int, seeds: int, n: int, effect: float, sd: float = 0.2):
    difficulty = rng.normal(1.2, 1.5, (reps, 1, n))
    a = rng.random((reps, seeds, n)) < expit(difficulty + effect + rng.normal(0, sd, (reps, seeds, 1)))
    b = rng.random((reps, seeds, n)) < expit(difficulty + rng.normal(0, sd, (reps, seeds, 1)))
    return a, b


def rate(flags: list[bool]) -> str:
    p = float(np.mean(flags))
    return f"{p:.3f} ± {math.sqrt(p * (1 - p) / len(flags)):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| test | seeds | examples | false 'differs'/'supported' (no effect) | found (effect: +0.5 logit) |")
    print("|---|---|---|---|---|")
    for seeds in (1, 2, 3, 5):
        for n in (100, 1000):
            row = []
            for effect in (0.0, 0.5):
                a, b = simulate(rng, args.reps, seeds, n, effect)
                row.append(rate([paired_runs(list(x), list(y)).significant for x, y in zip(a, b)]))
            print(f"| paired (per-example) | {seeds} | {n} | {row[0]} | {row[1]} |")
            if seeds > 1:
                row = []
                for effect in (0.0, 0.5):
                    a, b = simulate(rng, args.reps, seeds, n, effect)
                    row.append(rate([unpaired_accuracies(x.mean(1), n, y.mean(1), n).significant
                                     for x, y in zip(a, b)]))
                print(f"| unpaired (accuracies) | {seeds} | {n} | {row[0]} | {row[1]} |")
    for seeds in (2, 3, 5):
        null = rng.normal(0, 0.02, (args.reps, seeds))
        real = rng.normal(0.03, 0.02, (args.reps, seeds))
        old = [float(v.mean() / (v.std(ddof=1) / math.sqrt(seeds))) > 2 for v in null]
        print(f"| lab check (seed t, margin 0.01) | {seeds} | - | "
              f"{rate([seed_test(v, 0.01).verdict == 'supported' for v in null])} "
              f"(old rule mean/se > 2: {rate(old)}) | {rate([seed_test(v, 0.01).verdict == 'supported' for v in real])} "
              f"(effect 1.5 sd) |")


if __name__ == "__main__":
    main()
