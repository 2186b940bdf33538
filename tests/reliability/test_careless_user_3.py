"""What a careless user does by accident, part 3: Ctrl-C (or `kill`) on the launcher of a `--nproc 2` run, a kept
pre-trained folder whose pretrained_cfg.json was edited by hand, and a run made under a umask. Each ends in one
line (exit 2) or in outputs with the permissions every other file gets."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import ROOT, default_sigint, error_line, run_cli, subprocess_env

PRETRAIN = ["pretrain", "--data", "digits:0-4", "--image-size", "16", "--epochs", "1", "--max-train", "60",
            "--batch-size", "32"]
NPROC_RUN = ["finetune", "--model", "test_efficientnet", "--data", "digits", "--image-size", "32", "--max-train",
             "200", "--epochs", "3", "--device", "cpu", "--nproc", "2"]


# ---- a signal to the launcher of --nproc 2 ---------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the command name is in parentheses and may hold spaces: the fields after it are fixed
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _processes_naming(text: str) -> list[int]:
    """The live processes whose command line holds `text` (every rank has the run's --out in its argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if text in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def _wait_for(condition, proc: subprocess.Popen, err: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the signal: {err.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out: {err.read_text()[-3000:]}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the launcher's processes in /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_the_nproc_launcher_is_one_line_and_stops_every_process(tmp_path, sig):
    out = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    with open(err, "w") as err_fh:
        proc = subprocess.Popen([sys.executable, "-m", "transferlab", *NPROC_RUN, "--out", str(out)], cwd=ROOT,
                                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=err_fh,
                                preexec_fn=default_sigint)
        try:
            if sig == signal.SIGINT:  # training: the first checkpoint is written
                _wait_for((out / "checkpoint" / "last.safetensors").is_file, proc, err)
            else:  # as soon as both ranks are started, maybe before any checkpoint
                _wait_for(lambda: len(_children(proc.pid)) == 2, proc, err)
            ranks = _children(proc.pid)
            proc.send_signal(sig)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = err.read_text()
    assert proc.returncode == 2, stderr[-3000:]
    last = [ln for ln in stderr.splitlines() if ln.strip()][-1]
    assert last == error_line(stderr), stderr[-3000:]  # the one error line, no traceback, and it comes last
    assert last.startswith(f"transferlab: error: interrupted by {sig.name}; the job's training processes were "
                           f"stopped; "), last
    assert len(ranks) == 2 and not [pid for pid in ranks if Path(f"/proc/{pid}").exists()]
    assert not _processes_naming(str(out))
    if sig == signal.SIGINT:
        assert last.endswith(f"the last good checkpoint is {out / 'checkpoint' / 'last.safetensors'} "
                             f"(continue with --resume)"), last
        done = subprocess.run([sys.executable, "-m", "transferlab", *NPROC_RUN, "--out", str(out), "--resume"],
                              cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert [json.loads(ln)["epoch"] for ln in (out / "history.jsonl").read_text().splitlines()] == [1, 2, 3]


# ---- a kept pre-trained folder edited by hand -------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("pretrained") / "run"
    try:
        code = main([*PRETRAIN, "--out", str(out)])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    return out


def _edit(folder: Path, change) -> None:
    file = folder / "pretrained_cfg.json"
    raw = json.loads(file.read_text())
    change(raw)
    file.write_text(json.dumps(raw))


def _cfg(**fields):
    return lambda raw: raw["cfg"].update(fields)


def _other_architecture(raw: dict) -> None:
    raw["builder"] = raw["cfg"]["architecture"] = "test_efficientnet"


TAMPERS = {  # id: (the edit, the field the one line names)
    "input_size_negative": (_cfg(input_size=-5), "'cfg.input_size'"),
    "input_size_text": (_cfg(input_size="16"), "'cfg.input_size'"),
    "input_size_two_ints": (_cfg(input_size=[16, 16]), "'cfg.input_size'"),
    "mean_one_channel": (_cfg(mean=[0.5]), "'cfg.mean'"),
    "mean_text": (_cfg(mean="0.5"), "'cfg.mean'"),
    "std_zero": (_cfg(std=[0.0, 0.3, 0.3]), "'cfg.std'"),
    "std_nan": (_cfg(std=[float("nan"), 0.3, 0.3]), "'cfg.std'"),
    "interpolation_unknown": (_cfg(interpolation="lanczos9"), "'cfg.interpolation'"),
    "crop_pct_zero": (_cfg(crop_pct=0), "'cfg.crop_pct'"),
    "modality_text": (_cfg(modality="text"), "'cfg.modality'"),
    "architecture_not_builder": (_cfg(architecture="resnet18"), "'cfg.architecture'"),
    "builder_not_the_weights": (lambda raw: raw.update(builder="resnet18"), "'builder'"),
    "source_classes_count": (_cfg(source_classes=["a"]), "'cfg.source_classes'"),
    "num_source_classes_not_the_head": (_cfg(num_source_classes=7, source_classes=[]), "'cfg.num_source_classes'"),
    "classifier_not_linear": (_cfg(classifier="conv1"), "'cfg.classifier'"),
    "has_weights_false_beside_weights": (lambda raw: raw.update(has_weights=False), "'has_weights'"),
    "has_weights_text": (lambda raw: raw.update(has_weights="yes"), "'has_weights'"),
    "architecture_not_the_weights": (_other_architecture, "'builder'"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_tampered_pretrained_cfg_is_one_line_naming_file_and_field(pretrained_run, tmp_path, capsys, tamper):
    change, field = TAMPERS[tamper]
    folder = Path(shutil.copytree(pretrained_run / "checkpoints" / "epoch_1", tmp_path / "kept"))
    _edit(folder, change)
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", "--model", str(folder), "--data", "digits", "--image-size", "16",
                            "--epochs", "1", "--max-train", "40", "--max-val", "20", "--out", str(out)], capsys)
    line = error_line(err)
    assert code == 2, err
    assert str(folder / "pretrained_cfg.json") in line and field in line, line
    assert not out.exists()


def test_untampered_folder_reads_without_touching_the_rng(pretrained_run, tmp_path):
    """The checks read the weights' header and build the architecture on the meta device: no tensor is loaded and
    the global RNG (which a bit-identical resume depends on) is left as it was. timm's [3, side, side] form of the
    input size is read as the side."""
    from transferlab.models.pretrained_dir import read_folder

    folder = Path(shutil.copytree(pretrained_run / "checkpoints" / "epoch_1", tmp_path / "kept"))
    before = torch.random.get_rng_state()
    builder, cfg, weights, _ = read_folder(folder)
    assert torch.equal(before, torch.random.get_rng_state())
    assert builder == "resnet10_cifar" and weights == folder / "model.safetensors" and cfg.input_size == 16
    _edit(folder, _cfg(input_size=[3, 16, 16]))
    assert read_folder(folder)[1].input_size == 16
    assert read_folder(pretrained_run / "checkpoints" / "scratch")[2] is None  # the random-init entry


# ---- the umask --------------------------------------------------------------------------------------------
def _modes(root: Path) -> tuple[set[int], set[int]]:
    """The permission bits of the folders (`root` included) and of the files under `root`."""
    paths = [root, *root.rglob("*")]
    return ({stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_dir()},
            {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_file()})


@pytest.mark.parametrize("umask, folders, files", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)],
                         ids=["022", "077"])
def test_run_outputs_follow_the_umask(tmp_path, capsys, umask, folders, files):
    out = tmp_path / "run"
    previous = os.umask(umask)
    try:
        code, _, err = run_cli([*PRETRAIN, "--out", str(out)], capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    assert (out / "checkpoints" / "epoch_1").is_dir() and (out / "checkpoint").is_dir()
    assert _modes(out) == ({folders}, {files})


@pytest.mark.parametrize("umask, folders", [(0o022, 0o755), (0o077, 0o700)], ids=["022", "077"])
def test_lab_data_folder_follows_the_umask(tmp_path, umask, folders):
    from transferlab.labs._atomic_folder import write_atomically

    previous = os.umask(umask)
    try:
        out = write_atomically(tmp_path / "data", "done.txt", "v1", lambda temp: (temp / "a.txt").write_text("a"),
                               owned=lambda parts: parts == ("a.txt",))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == folders
