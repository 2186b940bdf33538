"""Still more of what a careless user does: --batch-size 1 at a small image size, evaluate on other data with the
run's --max-val, predict given a folder, --eval-batch-size 0, freeze:k=1_0, drift with tiny minibatches or zero
batches, lora:targets=conv_dw, -v after the command, a corrupt image in the counts, and a linked class folder."""
from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import TINY_IMAGE_MODEL
from tests.reliability.conftest import error_line, run_cli

TINY = ["--model", TINY_IMAGE_MODEL, "--data", "digits", "--image-size", "32", "--max-train", "60", "--epochs", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run on digits whose validation split was capped with --max-val 20."""
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("careless4") / "run"
    assert main(["finetune", *TINY, "--max-val", "20", "--out", str(out)]) in (0, None)
    return out


def _class_folder(folder: Path, shade: int, n: int = 8) -> None:
    folder.mkdir(parents=True)
    for j in range(n):
        Image.new("RGB", (16, 16), (shade, 20 * j, 255 - shade)).save(folder / f"{j}.png")


# ---- 1. --batch-size 1 where a training BatchNorm layer would see one value per channel -----------------------
def test_batch_size_one_at_a_small_image_size_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", *TINY, "--batch-size", "1", "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert "--batch-size 1" in line and "BatchNorm" in line and "1 value per channel" in line
    assert "--batch-size 2" in line and "--bn-stats frozen" in line
    assert "Expected more than 1 value" not in err
    assert not out.exists()


def test_batch_size_one_trains_where_no_batchnorm_layer_normalises_a_single_value(tmp_path, capsys):
    # what the refusal suggests works, and so does a strategy under which no BatchNorm layer trains
    for extra in (["--bn-stats", "frozen"], ["--strategy", "linear_probe"]):
        out = tmp_path / extra[-1]
        code, _, err = run_cli(["finetune", *TINY[:-4], "--max-train", "12", "--epochs", "1", "--batch-size", "1",
                                *extra, "--out", str(out)], capsys)
        assert code == 0, err
        assert (out / "metrics.json").is_file()


# ---- 2. evaluate --data OTHER: the run's --max-val was for its own data -----------------------------------------
def _evaluate(args: list[str], capsys) -> dict:
    code, printed, err = run_cli(["evaluate", *args], capsys)
    assert code == 0, err
    return json.loads(printed)


def test_evaluate_on_other_data_does_not_apply_the_runs_max_val(tiny_run, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="transferlab"):
        other = _evaluate(["--run", str(tiny_run), "--data", "digits:0-9"], capsys)
    assert other["n"] > 20  # every validation example of the other data set
    assert any("--max-val 20" in r.getMessage() and "digits:0-9" in r.getMessage() for r in caplog.records)
    assert _evaluate(["--run", str(tiny_run)], capsys)["n"] == 20  # its own data: as the run was evaluated
    assert _evaluate(["--run", str(tiny_run), "--max-val", "10"], capsys)["n"] == 10
    assert _evaluate(["--run", str(tiny_run), "--data", "digits:0-9", "--max-val", "10"], capsys)["n"] == 10


def test_evaluate_refuses_a_max_val_of_zero_in_one_line(tiny_run, capsys):
    code, printed, err = run_cli(["evaluate", "--run", str(tiny_run), "--max-val", "0"], capsys)
    assert code == 2 and printed == ""
    assert "--max-val must be at least 1" in error_line(err)


# ---- 3. predict given a folder --------------------------------------------------------------------------------
def test_predict_given_a_folder_says_so_and_prints_nothing(tiny_run, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (16, 16), "red").save(folder / "a.png")
    code, printed, err = run_cli(["predict", "--run", str(tiny_run), str(folder / "a.png"), f"{folder}/"], capsys)
    assert code == 2 and printed == ""  # not even the TSV header
    line = error_line(err)
    assert f"{folder} is a folder" in line and f"{folder}/*.png" in line and "no such image file" not in line


# ---- 4. --eval-batch-size 0 names itself ------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--eval-batch-size", "--batch-size"])
def test_a_zero_batch_size_is_refused_naming_its_own_option(tmp_path, capsys, flag):
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", *TINY, flag, "0", "--out", str(out)], capsys)
    assert code == 2
    assert error_line(err).endswith(f"{flag} must be >= 1, got 0")
    assert not out.exists()


# ---- 5. spec numbers: no underscores (int("1_0") == 10) ------------------------------------------------------
@pytest.mark.parametrize("spec, said", [("freeze:k=1_0", "k='1_0' is not a valid int"),
                                        ("l2sp:alpha=1_0.5", "alpha='1_0.5' is not a valid float"),
                                        ("freeze:k=\u0661", "is not a valid int")])  # an Arabic-Indic one
def test_a_spec_number_with_underscores_or_other_digits_is_refused(tmp_path, capsys, spec, said):
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", *TINY, "--strategy", spec, "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert said in line and ("_" not in spec or "without '_'" in line)
    assert not out.exists()


def test_plain_spec_numbers_are_still_read():
    from transferlab.specs import convert_value

    assert [convert_value(v, int, "s", "k") for v in ("10", "-3", "+2")] == [10, -3, 2]
    assert [convert_value(v, float, "s", "a") for v in ("1e-5", ".5", "1.", "2", "-1.5E+2")] == \
        [1e-5, 0.5, 1.0, 2.0, -150.0]


# ---- 6. diagnose drift: tiny minibatches and zero batches --------------------------------------------------------
@pytest.mark.parametrize("args, said", [(["--batch-size", "2"], "at least 4 examples per minibatch"),
                                        (["--max-batches", "0"], "--max-batches: must be at least 1")])
def test_drift_refuses_minibatches_too_small_for_cka_and_zero_batches(tiny_run, capsys, args, said):
    code, printed, err = run_cli(["diagnose", "drift", "--run", str(tiny_run), *args], capsys)
    assert code == 2 and printed == ""
    assert said in error_line(err)


def test_drift_says_why_cka_is_empty_when_the_run_evaluated_in_tiny_batches(tiny_run, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    config = json.loads((run / "config.json").read_text())
    config["train"]["eval_batch_size"] = 2  # as a run made with --eval-batch-size 2
    (run / "config.json").write_text(json.dumps(config))
    code, printed, err = run_cli(["diagnose", "drift", "--run", str(run), "--json"], capsys)
    assert code == 0, err
    result = json.loads(printed)
    assert all(g["cka"] is None for g in result["groups"]) and result["examples"] == 20
    assert "no CKA" in result["note"] and "--batch-size 4" in result["note"]


# ---- 7. lora:targets=conv_dw lists only layers LoRA can target --------------------------------------------------
def test_lora_refusal_lists_only_targetable_layers(tmp_path, capsys):
    from torch import nn

    from transferlab.models import create_model

    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", "test_convnext", *TINY[2:], "--strategy", "lora:targets=conv_dw",
                            "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    line = error_line(err)
    assert "grouped (depthwise)" in line
    listed = line.rsplit("look like: ", 1)[1].rstrip(")").split(", ")
    layers = dict(create_model("test_convnext", 10).backbone.named_modules())
    assert listed and all(isinstance(layers[n], (nn.Linear, nn.Conv2d)) and getattr(layers[n], "groups", 1) == 1
                          for n in listed), listed


# ---- 8. -v after the command ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, verbose", [
    (["finetune", "-v", "--model", "m", "--data", "d", "--out", "o"], True),
    (["-v", "finetune", "--model", "m", "--data", "d", "--out", "o"], True),
    (["finetune", "--model", "m", "--data", "d", "--out", "o", "--verbose"], True),
    (["diagnose", "drift", "--run", "r", "-v"], True),
    (["finetune", "--model", "m", "--data", "d", "--out", "o"], False),
])
def test_verbose_is_accepted_before_and_after_the_command(argv, verbose):
    from transferlab.cli import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def test_verbose_after_the_command_runs_it(capsys):
    code, printed, err = run_cli(["strategies", "-v"], capsys)
    assert code in (0, None), err
    assert "lora" in printed


# ---- 9. the data summary counts the images used -------------------------------------------------------------
def test_data_summary_leaves_out_an_image_that_failed_to_decode(tmp_path, capsys):
    data = tmp_path / "data"
    _class_folder(data / "a", 0)
    _class_folder(data / "b", 250)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(jpeg, "JPEG")
    # a valid header (it passes the check at load time) over a body that does not decode
    (data / "a" / "corrupt.jpg").write_bytes(jpeg.getvalue()[:200] + bytes(range(256)) * 4)
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", str(data), "--image-size", "16",
                            "--epochs", "1", "--batch-size", "8", "--out", str(out)], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["data_summary"]
    assert [Path(s["path"]).name for s in metrics["skipped_files"]] == ["corrupt.jpg"]
    assert summary["train"] + summary["val"] == 16  # the 16 readable images, not the 17 files
    assert summary["skipped"] == 1


# ---- 10. linked class folders ---------------------------------------------------------------------------------
def test_a_class_folder_linked_to_another_class_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    _class_folder(data / "train" / "ants", 0)
    _class_folder(data / "train" / "bees", 250)
    (data / "train" / "link").symlink_to(data / "train" / "ants", target_is_directory=True)
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", str(data), "--image-size", "16",
                            "--epochs", "1", "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    line = error_line(err)
    assert "link" in line and "inside the data set" in line and "remove the link" in line


def _image_cfg():
    from transferlab.models import model_cfg

    return model_cfg(TINY_IMAGE_MODEL)


def test_a_validation_class_linked_to_the_training_one_is_refused(tmp_path):
    from transferlab.data import DataError, DataOptions, load_data

    data = tmp_path / "data"
    for cls, shade in (("ants", 0), ("bees", 250)):
        _class_folder(data / "train" / cls, shade)
    (data / "val").mkdir()
    (data / "val" / "ants").symlink_to(data / "train" / "ants", target_is_directory=True)
    _class_folder(data / "val" / "bees", 250, n=2)
    with pytest.raises(DataError, match="inside the data set"):
        load_data(str(data), _image_cfg(), DataOptions(image_size=16))


def test_class_folders_linked_from_outside_are_read_with_a_warning(tmp_path, caplog):
    from transferlab.data import DataError, DataOptions, load_data

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _class_folder(data / "ants", 0)
    _class_folder(elsewhere / "bees", 250)
    (data / "bees").symlink_to(elsewhere / "bees", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        bundle = load_data(str(data), _image_cfg(), DataOptions(image_size=16))
    assert bundle.classes == ["ants", "bees"] and len(bundle.train) + len(bundle.val) == 16
    assert any("links out of" in r.getMessage() and "bees" in r.getMessage() for r in caplog.records)
    (data / "wasps").symlink_to(elsewhere / "bees", target_is_directory=True)  # the same folder twice
    with pytest.raises(DataError, match="links to the same folder"):
        load_data(str(data), _image_cfg(), DataOptions(image_size=16))
