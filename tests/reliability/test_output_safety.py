"""Outputs: transferlab writes only where it may, deletes only what it wrote, and answers bad input with one line.

Each test does the damage the adversarial review did (issue 11) on real files, and checks the user's files by
their bytes before and after.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import shared_data
from tests.reliability.conftest import error_line, run_cli

TINY = ["--model", "test_efficientnet", "--image-size", "32", "--epochs", "1", "--batch-size", "8"]


def tree_hash(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under root (symlinks by their target, folders as such), except under `skip`."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_dir() and not p.is_symlink():
            out[str(p.relative_to(root))] = "folder"
        elif p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A flat image folder (ants/, bees/: 8 real hymenoptera photos each), no train/val split."""
    hymenoptera = shared_data("hymenoptera")
    root = tmp_path_factory.mktemp("images") / "hym"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for src in sorted((hymenoptera / "train" / cls).iterdir())[:8]:
            shutil.copyfile(src, root / cls / src.name)
    return root


@pytest.fixture(scope="module")
def image_run(images, tmp_path_factory) -> Path:
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("image_run") / "run"
    assert main(["finetune", *TINY, "--data", str(images), "--out", str(out)]) in (0, None)
    return out


def _user_folder(root: Path) -> Path:
    """A folder of the user's own that happens to hold a config.json and a checkpoint/ folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"my": "settings"}')
    (root / "checkpoint").mkdir(exist_ok=True)
    (root / "checkpoint" / "my_model.pt").write_bytes(b"weights I trained for a week")
    return root


# ---- --overwrite deletes only what transferlab wrote ---------------------------------------------------------
def test_overwrite_never_deletes_a_users_config_and_checkpoint(tmp_path, capsys, monkeypatch):
    user = _user_folder(tmp_path / "project")
    before = tree_hash(user)
    monkeypatch.chdir(user)
    for out in (str(user), "", ".", "./"):
        code, _, err = run_cli(["finetune", *TINY, "--data", "digits", "--max-train", "40", "--out", out,
                                "--overwrite"], capsys)
        assert code == 2, (out, err)
        line = error_line(err)
        assert ("is empty" in line) if out == "" else ("not a transferlab run" in line), line
    assert tree_hash(user) == before


def test_overwrite_of_a_run_keeps_the_users_files_in_it(image_run, images, tmp_path, capsys):
    run = Path(shutil.copytree(image_run, tmp_path / "run"))
    (run / "notes.txt").write_text("mine")
    (run / "checkpoint" / "my_model.pt").write_bytes(b"mine too")
    code, _, err = run_cli(["finetune", *TINY, "--data", str(images), "--out", str(run), "--overwrite"], capsys)
    assert code == 0, err
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "checkpoint" / "my_model.pt").read_bytes() == b"mine too"
    assert (run / "metrics.json").is_file() and (run / "checkpoint" / "best.safetensors").is_file()


def test_a_foreign_folder_is_refused_even_without_overwrite(tmp_path, capsys):
    user = _user_folder(tmp_path / "project")
    before = tree_hash(user)
    code, _, err = run_cli(["finetune", *TINY, "--data", "digits", "--max-train", "40", "--out", str(user)], capsys)
    assert code == 2 and "not a transferlab run" in error_line(err)
    assert tree_hash(user) == before


def test_compare_and_adapt_bn_refuse_a_users_folder(image_run, images, tmp_path, capsys):
    user = _user_folder(tmp_path / "project")
    before = tree_hash(user)
    code, _, err = run_cli(["compare", *TINY, "--data", "digits", "--strategies", "linear_probe", "--out",
                            str(user)], capsys)
    assert code == 2 and "not a transferlab comparison" in error_line(err)
    code, _, err = run_cli(["adapt-bn", "--run", str(image_run), "--data", str(images), "--out", str(user),
                            "--overwrite"], capsys)
    assert code == 2 and "not a transferlab run" in error_line(err)
    assert tree_hash(user) == before


# ---- outputs that overlap inputs -----------------------------------------------------------------------------
def test_out_inside_the_data_folder_is_refused(images, image_run, capsys):
    before = tree_hash(images)
    for out in (images / "run", images / "ants" / "run", images):
        code, _, err = run_cli(["finetune", *TINY, "--data", str(images), "--out", str(out)], capsys)
        assert code == 2 and "--data" in error_line(err), err
        code, _, err = run_cli(["adapt-bn", "--run", str(image_run), "--data", str(images), "--out", str(out)],
                               capsys)
        assert code == 2 and "--data" in error_line(err), err
    assert tree_hash(images) == before


def test_adapt_bn_refuses_its_own_run_in_every_spelling(image_run, images, tmp_path, capsys, monkeypatch):
    run = Path(shutil.copytree(image_run, tmp_path / "run"))
    (tmp_path / "link").symlink_to(run)
    before = tree_hash(run)
    monkeypatch.chdir(tmp_path)
    for out in ("run", "run/", "./run", "link", "link/", str(run / "checkpoint"), str(tmp_path)):
        code, _, err = run_cli(["adapt-bn", "--run", "run", "--data", str(images), "--out", out, "--overwrite"],
                               capsys)
        assert code == 2 and "--run" in error_line(err), (out, err)
    assert tree_hash(run) == before


def test_out_naming_an_existing_file_is_one_line(tmp_path, capsys):
    existing = tmp_path / "a_file"
    existing.write_text("keep")
    for argv in (["finetune", *TINY, "--data", "digits", "--max-train", "40", "--out", str(existing)],
                 ["finetune", *TINY, "--data", "digits", "--max-train", "40", "--out", str(existing / "run")],
                 ["compare", *TINY, "--data", "digits", "--strategies", "linear_probe", "--out", str(existing)]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "is a file" in error_line(err) or "existing file" in error_line(err), err
    assert existing.read_text() == "keep"


# ---- tracebacks that become one line, before anything is written ---------------------------------------------
@pytest.mark.parametrize("extra", [
    ["--device", "cuda"], ["--device", "tpu"], ["--device", "mps"], ["--device", "meta"], ["--device", "cuda:abc"],
    ["--device", ""], ["--lr", "1e300"], ["--strategy", "full:backbone_lr=1e300"], ["--seed=-1"],
    ["--seed", str(2**63)], ["--strategy", "lp_ft", "--epochs", "2"]])
def test_bad_settings_are_one_line_and_write_nothing(extra, tmp_path, capsys):
    import torch

    if extra == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    if extra == ["--device", "mps"] and torch.backends.mps.is_available():
        pytest.skip("an MPS device is here")
    out = tmp_path / "run"
    argv = ["finetune", *TINY, "--data", "digits", "--max-train", "40", "--out", str(out), *extra]
    if "--epochs" in extra:
        argv.remove("--epochs")
        argv.remove("1")
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    error_line(err)
    assert not out.exists(), f"{extra}: the run folder was created"


def test_a_folder_that_is_not_a_model_and_pickled_hf_weights_are_one_line(tiny_bert_dir, small_text_data, tmp_path,
                                                                         capsys):
    import torch
    from safetensors.torch import load_file

    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    (not_a_model / "a.txt").write_text("x")
    pickled = Path(shutil.copytree(tiny_bert_dir, tmp_path / "pickled_bert"))
    state = load_file(str(pickled / "model.safetensors"))
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")  # the pre-safetensors layout, a pickle
    for model, words in ((not_a_model, "not a Hugging Face model"), (pickled, "pickles")):
        out = tmp_path / f"run_{model.name}"
        code, _, err = run_cli(["finetune", "--model", str(model), "--data", str(small_text_data), "--epochs", "1",
                                "--out", str(out)], capsys)
        assert code == 2 and words in error_line(err), err
        assert not out.exists()


def test_a_last_batch_of_one_example_trains(tmp_path, capsys):
    # 33 examples, batch 32: the last batch would hold one image, and BatchNorm (1x1 maps at 32 px) one value.
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", "test_efficientnet", "--data", "digits", "--image-size", "32",
                            "--max-train", "33", "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0, err
    history = json.loads((out / "history.jsonl").read_text().splitlines()[0])
    assert history["samples_per_second"] > 0
    from transferlab.training.batches import NoSingletonBatches

    sizes = [len(b) for b in NoSingletonBatches(range(33), 32)]
    assert sizes == [33] and len(NoSingletonBatches(range(33), 32)) == 1
    assert [len(b) for b in NoSingletonBatches(range(34), 32)] == [32, 2]


# ---- resume -------------------------------------------------------------------------------------------------
def test_resume_refuses_contradicting_arguments_and_names_them(image_run, images, tmp_path, capsys):
    run = Path(shutil.copytree(image_run, tmp_path / "run"))
    (run / "metrics.json").unlink()
    before = tree_hash(run)
    code, _, err = run_cli(["finetune", *TINY, "--data", "digits", "--strategy", "linear_probe", "--lr", "0.5",
                            "--out", str(run), "--resume"], capsys)
    line = error_line(err)
    assert code == 2 and "--data" in line and "--strategy" in line and "--lr" in line, line
    assert tree_hash(run) == before


def test_resume_with_the_same_or_allowed_arguments_is_quiet(image_run, images, tmp_path, capsys, caplog):
    run = Path(shutil.copytree(image_run, tmp_path / "run"))
    (run / "metrics.json").unlink()
    code, _, err = run_cli(["finetune", *TINY, "--data", str(images), "--device", "cpu", "--out", str(run),
                            "--resume"], capsys)
    assert code == 0, err
    assert "WARNING" not in err and "contradict" not in err
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["device"] == "cpu"  # the allowed difference took effect


def test_resume_of_nothing_is_an_error(tmp_path, capsys):
    code, _, err = run_cli(["finetune", *TINY, "--data", "digits", "--out", str(tmp_path / "none"), "--resume"],
                           capsys)
    assert code == 2 and "holds no run" in error_line(err)
    assert not (tmp_path / "none").exists()


# ---- a run is self-contained ---------------------------------------------------------------------------------
def test_a_run_works_from_another_directory_and_predicts_without_its_data(images, tmp_path, capsys, monkeypatch):
    data = Path(shutil.copytree(images, tmp_path / "work" / "data"))
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = run_cli(["finetune", *TINY, "--data", "data", "--out", "run"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "work" / "run" / "config.json").read_text())["data"] == str(data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = str(tmp_path / "work" / "run")
    code, out, err = run_cli(["evaluate", "--run", run], capsys)
    assert code == 0, err
    image = str(sorted((data / "ants").iterdir())[0])
    keep = tmp_path / "one.jpg"
    shutil.copyfile(image, keep)
    shutil.rmtree(data)  # the training data is gone: predict needs only the run
    code, out, err = run_cli(["predict", "--run", run, str(keep)], capsys)
    assert code == 0, err
    label, prob, echoed, error = out.splitlines()[1].split("\t")
    assert label in ("ants", "bees") and echoed == str(keep) and error == ""


def test_predict_answers_every_input_and_escapes_fields(image_run, images, tmp_path, capsys):
    good = str(sorted((images / "bees").iterdir())[0])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    odd = tmp_path / "tab\there.jpg"
    shutil.copyfile(good, odd)
    code, out, err = run_cli(["predict", "--run", str(image_run), str(broken), good, str(tmp_path / "missing.png"),
                              str(odd)], capsys)
    lines = out.splitlines()
    assert lines[0] == "label\tprobability\tinput\terror" and len(lines) == 5
    rows = [ln.split("\t") for ln in lines[1:]]
    assert all(len(r) == 4 for r in rows), rows
    assert rows[0][3] and not rows[0][0] and rows[1][0] in ("ants", "bees") and not rows[1][3]
    assert rows[2][3] and rows[3][2] == str(odd).replace("\t", "\\t") and not rows[3][3]
    assert code == 2 and "2 of 4 inputs" in error_line(err)


# ---- export-source -------------------------------------------------------------------------------------------
def _peft_run(images: Path, tmp_path: Path, capsys, strategy: str) -> Path:
    run = tmp_path / f"{strategy}_run"
    code, _, err = run_cli(["finetune", *TINY, "--data", str(images), "--strategy", strategy, "--out", str(run)],
                           capsys)
    assert code == 0, err
    return run


def test_export_source_merges_lora_and_never_overwrites_silently(images, tmp_path, capsys):
    from transferlab.models import create_model

    run = _peft_run(images, tmp_path, capsys, "lora")
    out = tmp_path / "source.safetensors"
    code, _, err = run_cli(["export-source", "--run", str(run), "--out", str(out)], capsys)
    assert code == 0, err
    model = create_model("test_efficientnet", 2, weights=str(out))  # peft's names would be refused here
    assert model.source_head is not None
    first = out.read_bytes()
    code, _, err = run_cli(["export-source", "--run", str(run), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in error_line(err)
    assert out.read_bytes() == first
    for bad in ("", str(run), str(run / "checkpoint" / "x.safetensors"), str(tmp_path)):
        code, _, err = run_cli(["export-source", "--run", str(run), "--out", bad], capsys)
        assert code == 2, (bad, err)
        error_line(err)


def test_export_source_refuses_an_adapter_run(images, tmp_path, capsys):
    run = _peft_run(images, tmp_path, capsys, "adapter")
    out = tmp_path / "source.safetensors"
    code, _, err = run_cli(["export-source", "--run", str(run), "--out", str(out)], capsys)
    assert code == 2 and "adapter" in error_line(err)
    assert not out.exists()


# ---- smaller ones --------------------------------------------------------------------------------------------
def test_compare_exits_2_when_every_cell_failed(tmp_path, capsys):
    # every cell fails at its first step: lr so large that SGD overflows float32 at once
    code, out, err = run_cli(["compare", "--model", "test_efficientnet", "--data", "digits", "--image-size", "32",
                              "--max-train", "40", "--max-val", "20", "--epochs", "1", "--strategies", "full",
                              "--no-scratch", "--optimizer", "sgd", "--lr", "1e9", "--out", str(tmp_path / "grid")],
                             capsys)
    assert code == 2 and "every run of the comparison failed" in error_line(err), err


def test_bn_shift_of_a_model_without_batchnorm_is_an_error(tiny_bert_dir, small_text_data, capsys):
    code, out, err = run_cli(["diagnose", "bn-shift", "--model", str(tiny_bert_dir), "--data", str(small_text_data)],
                             capsys)
    assert code == 2 and "no BatchNorm layers" in error_line(err)
    assert "nan" not in out


def test_a_plot_never_replaces_a_file_that_is_not_a_png(image_run, tmp_path, capsys):
    mine = tmp_path / "thesis.png"
    mine.write_text("my thesis, misnamed")
    code, _, err = run_cli(["diagnose", "drift", "--run", str(image_run), "--plot", str(mine)], capsys)
    assert code == 2 and "not a PNG" in error_line(err)
    assert mine.read_text() == "my thesis, misnamed"
