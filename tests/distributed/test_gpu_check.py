"""benchmarks/gpu_check.py, the parts a machine without a GPU can check: it skips in one line with exit code 0, and
every command line it would run parses with transferlab's own parser (or, for the overhead case, with
benchmarks/trainer_overhead.py's), so an option renamed in the CLI breaks this test instead of the GPU run."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ALL_CASES = ["fp32", "bf16", "fp16", "fp16_resume", "memory_format", "nproc1", "nproc2", "cache", "ray", "overhead",
             "hymenoptera"]


def _script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run the checks")
def test_without_cuda_it_prints_one_line_and_exits_0(tmp_path):
    proc = _script("--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).splitlines() == ["no CUDA device: the GPU checks are skipped"]
    assert not (tmp_path / "out").exists()


def _planned(*args: str, env: dict | None = None) -> list[tuple[str, dict, list[str]]]:
    """(case, environment, argv after the program) of every command `--dry-run` lists."""
    proc = _script("--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = []
    for line in proc.stdout.splitlines():
        case, text = line.split("\t", 1)
        words = shlex.split(text)
        env_words = [w for w in words[:2] if "=" in w and not w.startswith("/")]
        words = words[len(env_words):]
        assert words[0] == sys.executable, line
        rows.append((case, dict(w.split("=", 1) for w in env_words), words[1:]))
    return rows


@pytest.fixture(scope="module")
def planned():
    return _planned(env={"TRANSFERLAB_DATA": "/data-root"})


def test_dry_run_lists_every_case_with_real_transferlab_commands(planned):
    assert [case for case in dict.fromkeys(case for case, _, _ in planned)] == ALL_CASES
    for case, _, argv in planned:
        if case == "overhead":
            assert Path(argv[0]) == ROOT / "benchmarks" / "trainer_overhead.py"
        else:
            assert argv[:2] == ["-m", "transferlab"], (case, argv)
            assert "--device" in argv and argv[argv.index("--device") + 1] == "cuda", (case, argv)


def test_every_command_parses_with_the_cli_parser(planned):
    """transferlab's own argparse parser (cli.build_parser), as `transferlab` would parse the line: an unknown option
    or a bad value is a SystemExit there."""
    from transferlab.cli import build_parser

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import trainer_overhead
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    parser = build_parser()
    commands = set()
    for case, env, argv in planned:
        if case == "overhead":
            args = trainer_overhead.build_parser().parse_args(argv[1:])
            assert args.device == "cuda" and args.cases in trainer_overhead.CASES and args.json
            continue
        args = parser.parse_args(argv[2:])  # SystemExit (one line on stderr) on anything the CLI does not have
        assert args.command in ("finetune", "compare")
        commands.add((tuple(argv), tuple(sorted(env.items()))))
        if case == "ray":
            assert (args.executor, args.gpus_per_cell, args.scratch, args.seeds) == ("ray", 1.0, False, 1)
            assert args.strategies.split(",") == ["linear_probe", "full"]
        if case == "nproc2" and Path(args.out).name == "nproc2":  # (the case also lists the 1-GPU fp32 run)
            assert (args.nproc, args.batch_size, args.sync_bn) == (2, 16, True)  # global batch 32
        if case == "hymenoptera":
            assert args.data == "/data-root/hymenoptera"


def test_the_fault_and_resume_commands_fit_together(planned):
    """fp16_resume: the killed run has the fault hook at a step inside epoch 2, after a mid-epoch checkpoint; the
    resumed run is the killed one's command line plus --resume and without the fault; the uninterrupted reference
    checkpoints as often (the same command, another folder)."""
    from transferlab.cli import build_parser

    rows = [(env, build_parser().parse_args(argv[2:])) for case, env, argv in planned if case == "fp16_resume"]
    (plain_env, plain), (whole_env, whole), (kill_env, killed), (resume_env, resumed) = rows
    assert plain.precision == whole.precision == killed.precision == resumed.precision == "fp16"
    assert not plain_env and not whole_env and not resume_env
    step = int(kill_env["TRANSFERLAB_FAULT"].removeprefix("kill_at_step:"))
    steps_per_epoch = -(-killed.max_train // killed.batch_size)
    assert killed.epochs == 2 and steps_per_epoch < step <= 2 * steps_per_epoch  # inside epoch 2
    every = killed.checkpoint_every_steps
    assert 0 < every and (step - 1) // every * every > steps_per_epoch  # a checkpoint after epoch 1's end
    assert resumed.resume and not killed.resume and resumed.out == killed.out != whole.out
    assert {k: v for k, v in vars(resumed).items() if k not in ("resume", "func")} == \
        {k: v for k, v in vars(killed).items() if k not in ("resume", "func")}
    assert {k: v for k, v in vars(whole).items() if k not in ("out", "func")} == \
        {k: v for k, v in vars(killed).items() if k not in ("out", "func")}


def test_different_commands_write_different_folders(planned):
    """A command listed by two cases is run once (the same line); two different lines never share --out, except the
    resume, which continues the killed run's folder."""
    outs: dict[str, set] = {}
    for case, env, argv in planned:
        if "--out" in argv:
            line = tuple(a for a in argv if a != "--resume")
            outs.setdefault(argv[argv.index("--out") + 1], set()).add((line, tuple(sorted(env))))
    shared = {out: lines for out, lines in outs.items() if len({line for line, _ in lines}) > 1}
    assert not shared, shared


def test_quick_and_cases_options(tmp_path):
    quick = _planned("--quick", "--cases", "fp16_resume,cache")
    assert {case for case, _, _ in quick} == {"fp16_resume", "cache"}
    assert all(argv[argv.index("--max-train") + 1] == "384" for _, _, argv in quick if "--max-train" in argv)
    proc = _script("--cases", "fp16,nope", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "unknown case(s) nope" in proc.stderr
