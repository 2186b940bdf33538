"""What a careless user (or an attacker) does by accident: a named pipe among the images, --nproc 64 on 2 cores,
a ViT at 32 px, freeze:k beyond the model's depth. Each refusal is one line, before anything is written."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.reliability.conftest import error_line, run_cli, run_subprocess

FAST = ["--model", "test_efficientnet", "--image-size", "32", "--epochs", "1", "--batch-size", "16"]


def _image_folder(root: Path, per_class: int = 6) -> Path:
    """Two classes of small real PNGs, and a named pipe called a.jpg in the first (reading it would block)."""
    for i, cls in enumerate(("red", "blue")):
        (root / cls).mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (20, 20), (200 * (1 - i), 10 * j, 200 * i)).save(root / cls / f"{j}.png")
    os.mkfifo(root / "red" / "a.jpg")
    return root


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_fifo_among_images_is_skipped_by_contamination(tmp_path):
    src = _image_folder(tmp_path / "src" / "train")
    tgt = _image_folder(tmp_path / "tgt" / "test")
    done = run_subprocess(["contamination", "--source", str(src.parent), "--target", str(tgt.parent),
                           "--methods", "exact,phash", "--out", str(tmp_path / "out")], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not a regular file" in done.stderr
    assert (tmp_path / "out" / "summary.json").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_fifo_among_images_is_skipped_by_finetune(tmp_path):
    data = _image_folder(tmp_path / "data")
    done = run_subprocess(["finetune", *FAST, "--data", str(data), "--out", str(tmp_path / "run")], timeout=120)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reasons = {Path(item["path"]).name: item["reason"] for item in metrics["skipped_files"]}
    assert reasons.get("a.jpg", "").startswith("not a regular file"), reasons


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_nproc_above_the_cores_is_one_line_and_starts_nothing(tmp_path, capsys, monkeypatch, command):
    import torch.distributed.launcher.api as launcher

    started = []
    monkeypatch.setattr(launcher, "elastic_launch", lambda *a, **k: started.append(a))
    out = tmp_path / "run"
    args = [command, "--model", "test_efficientnet", "--data", "digits", "--image-size", "32", "--device", "cpu",
            "--nproc", "64", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "--nproc 64" in error_line(err) and "--oversubscribe" in error_line(err)
    assert not started and not out.exists()


def test_nproc_above_the_gpus_is_refused(monkeypatch):
    import argparse

    import torch

    from transferlab.cli._launch import wants_launch
    from transferlab.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="1 GPU"):
        wants_launch(argparse.Namespace(nproc=2, device="cuda", oversubscribe=False))
    assert wants_launch(argparse.Namespace(nproc=2, device="cuda", oversubscribe=True))


def test_local_ray_instance_binds_to_loopback(monkeypatch):
    pytest.importorskip("ray")
    from transferlab.compare import ray_executor

    calls = []

    class FakeRay:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(*args, **kwargs):
            calls.append(kwargs)

    assert ray_executor._connect(FakeRay, None, 1) is True
    (kwargs,) = calls
    assert kwargs.get("_node_ip_address") == "127.0.0.1"
    assert kwargs.get("include_dashboard") is False


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_fixed_size_vit_at_32px_is_one_line_and_writes_nothing(tmp_path, capsys, command):
    out = tmp_path / "run"
    code, _, err = run_cli([command, "--model", "vit_tiny_patch16_224", "--data", "digits", "--image-size", "32",
                            "--epochs", "1", "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert "224" in line and "--image-size 32" in line
    assert not out.exists()


def test_fixed_size_vit_in_diagnose_frequency_is_one_line(capsys):
    code, _, err = run_cli(["diagnose", "frequency", "--model", "vit_tiny_patch16_224", "--image-size", "32"],
                           capsys)
    assert code == 2 and "224" in error_line(err)


def test_freeze_beyond_the_depth_writes_nothing_and_the_fix_needs_no_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*FAST, "--data", "digits", "--max-train", "40", "--out", str(out)]
    code, _, err = run_cli(["finetune", *args, "--strategy", "freeze:k=99"], capsys)
    assert code == 2 and "freeze:k=99" in error_line(err)
    assert not out.exists() or not any(out.iterdir())
    code, _, err = run_cli(["finetune", *args, "--strategy", "freeze:k=2"], capsys)
    assert code == 0, err
    assert (out / "metrics.json").is_file()
