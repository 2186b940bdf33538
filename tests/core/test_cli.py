"""The command line: listings, and one clear error line (exit code 2) for bad input."""
import json

import pytest

from transferlab.cli import main


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_and_groups(capsys):
    code, out, _ = run(capsys, "models", "--json")
    names = [m["name"] for m in json.loads(out)]
    assert code == 0 and "efficientnet_lite0" in names and "minilm_l6" in names
    code, out, _ = run(capsys, "models", "--groups", "efficientnet_lite0", "--json")
    groups = json.loads(out)
    assert groups[0]["name"] == "stem" and groups[-1]["name"] == "head" and groups[-1]["params"] == 2 * 1280 + 2


def test_strategies_json(capsys):
    code, out, _ = run(capsys, "strategies", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["freeze"]["params"][0]["name"] == "k" and entries["freeze"]["params"][0]["help"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope", "--data", "digits"], "unknown model 'nope'"),
    (["--model", "test_efficientnet", "--data", "digits", "--strategy", "magic"], "unknown strategy 'magic'"),
    (["--model", "test_efficientnet", "--data", "/no/such/dir"], "/no/such/dir"),
    (["--model", "test_efficientnet", "--data", "digits", "--epochs", "0"], "--epochs must be >= 1"),
    (["--model", "test_efficientnet", "--data", "digits", "--bn-stats", "train"], "--bn-stats must be auto or frozen"),
])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, "finetune", *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len([l for l in lines if l.startswith("transferlab: error:")]) == 1
    assert message in err and "Traceback" not in err


def test_finished_run_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", "--model", "test_efficientnet", "--data", "digits", "--strategy", "linear_probe",
            "--epochs", "1", "--max-train", "50", "--image-size", "32", "--out", str(out)]
    assert run(capsys, *args)[0] == 0
    before = (out / "metrics.json").read_bytes()
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err
    assert (out / "metrics.json").read_bytes() == before


def test_evaluate_and_predict(capsys, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "finetune", "--model", "test_efficientnet", "--data", "digits", "--strategy", "full",
               "--epochs", "1", "--max-train", "80", "--image-size", "32", "--out", str(out))[0] == 0
    code, text, _ = run(capsys, "evaluate", "--run", str(out))
    result = json.loads(text)
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0 and result["accuracy"] == pytest.approx(metrics["val"]["accuracy"])


def test_predict_prints_label_and_probability(capsys, tmp_path, tiny_bert_dir, small_text_data):
    out = tmp_path / "text_run"
    assert run(capsys, "finetune", "--model", str(tiny_bert_dir), "--data", str(small_text_data),
               "--strategy", "full", "--epochs", "1", "--out", str(out))[0] == 0
    code, text, _ = run(capsys, "predict", "--run", str(out), "a gorgeous, moving film", "dreadful")
    lines = text.splitlines()
    assert code == 0 and lines[0] == "label\tprobability\tinput\terror" and len(lines) == 3
    for line, source in zip(lines[1:], ["a gorgeous, moving film", "dreadful"]):
        label, prob, echoed, error = line.split("\t")
        assert label in ("0", "1") and 0.5 <= float(prob) <= 1.0 and echoed == source and error == ""
