"""One rule for every path a command writes (--out, --cache-dir, --export-clean, --track targets), paths that do
not exist yet included: never in, around or equal to an input, never onto another output (nested only by
design), refused with one line and exit 2 before any work; and --track targets that cannot work (no server,
/proc, a file where a folder goes) are refused before training, not after it.

Every CLI call here is refused before the data is read, so each takes well under a second (a tracker's package
is imported once)."""
from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli

RUN = ["--model", TINY_IMAGE_MODEL, "--image-size", "16", "--epochs", "1", "--batch-size", "4"]
COMPARE = ["--strategies", "linear_probe", "--no-scratch"]


def tree_digest(root: Path) -> str:
    """sha256 over every path under root (folders included) and every file's bytes."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
        digest.update(b"/" if path.is_dir() else b"\1")
    return digest.hexdigest()


@pytest.fixture
def data(tmp_path) -> Path:
    """A small image folder (flat layout, classes a/ and b/, 6 images each), as a user's data set."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "DATA" / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "DATA" / name / f"{i}.png")
    return tmp_path / "DATA"


def refused(argv: list[str], capsys) -> str:
    code, _, err = run_cli(argv, capsys)
    assert code == 2, (argv, code, err)
    return error_line(err)


def command(name: str, data: Path, out: Path) -> list[str]:
    return [name, *RUN, *(COMPARE if name == "compare" else []), "--data", str(data), "--out", str(out)]


# ---- outputs inside an input, where nothing exists yet ------------------------------------------------------
@pytest.mark.parametrize("name", ["finetune", "compare"])
@pytest.mark.parametrize("extra, needs", [
    (["--track", "mlflow:sqlite:///{data}/x.db"], "mlflow"),
    (["--track", "tensorboard:{data}/tb"], "tensorboard"),
    (["--cache-dir", "{data}/cache"], None),
])
def test_a_new_output_inside_the_data_is_refused_before_any_work(name, extra, needs, data, tmp_path, capsys):
    if needs:
        pytest.importorskip(needs)
    before = tree_digest(data)
    out = tmp_path / "out"
    line = refused([*command(name, data, out), *[a.format(data=data) for a in extra]], capsys)
    assert "inside --data" in line
    assert tree_digest(data) == before and not out.exists()


def test_a_track_store_around_the_data_is_refused(data, tmp_path_factory, capsys):
    pytest.importorskip("tensorboard")
    before = tree_digest(data.parent)
    out = tmp_path_factory.mktemp("elsewhere") / "out"
    line = refused([*command("finetune", data, out), "--track", f"tensorboard:{data.parent}"], capsys)
    assert "contains --data" in line
    assert tree_digest(data.parent) == before and not out.exists()


def test_a_symlinked_new_output_is_resolved_before_it_exists(data, tmp_path, capsys):
    """`link/new/../cache` with link -> DATA: inside the data once created, though neither part exists."""
    (tmp_path / "link").symlink_to(data)
    before = tree_digest(data)
    line = refused([*command("finetune", data, tmp_path / "out"), "--cache-dir",
                    str(tmp_path / "link" / "new" / ".." / "cache")], capsys)
    assert "inside --data" in line and tree_digest(data) == before


# ---- outputs onto each other ----------------------------------------------------------------------------------
def test_contamination_export_clean_equal_to_out_is_refused_before_any_work(data, tmp_path, capsys):
    same = tmp_path / "X"
    line = refused(["contamination", "--source", str(data), "--target", str(data), "--split", "train",
                    "--out", str(same), "--export-clean", str(same)], capsys)
    assert "same path" in line and "nothing was written" not in line
    assert not same.exists()
    line = refused(["contamination", "--source", str(data), "--target", str(data), "--split", "train",
                    "--out", str(same), "--export-clean", str(same / "clean")], capsys)
    assert "contains --export-clean" in line and not same.exists()


@pytest.mark.parametrize("name, extra, message", [
    ("finetune", ["--cache-dir", "{out}"], "same path"),
    ("finetune", ["--cache-dir", "{out}/x/.."], "same path"),
    ("finetune", ["--cache-dir", "{tmp}"], "inside --cache-dir"),
    ("finetune", ["--track", "tensorboard:{out}"], "same path"),
    ("finetune", ["--track", "tensorboard:{tmp}/c", "--cache-dir", "{tmp}/c/sub"], "inside --track"),
    ("finetune", ["--track", "mlflow:sqlite:///{tmp}/m.db", "--track", "tensorboard:{tmp}/mlflow_artifacts"],
     "same path"),
    ("compare", ["--cache-dir", "{out}/runs"], "same path"),
    ("compare", ["--cache-dir", "{out}/runs/linear_probe"], "contains --cache-dir"),
])
def test_an_output_on_another_output_is_refused(name, extra, message, data, tmp_path, capsys):
    if any("tensorboard" in a for a in extra):
        pytest.importorskip("tensorboard")
    if any("mlflow" in a for a in extra):
        pytest.importorskip("mlflow")
    out = tmp_path / "out"
    line = refused([*command(name, data, out), *[a.format(out=out, tmp=tmp_path) for a in extra]], capsys)
    assert message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DATA"]  # nothing was created


def test_outputs_nested_by_design_are_allowed(tmp_path):
    """The rule itself, on paths that do not exist: a cache or a tracker's store inside --out is by design."""
    from transferlab.errors import ConfigError
    from transferlab.outputs import check_outputs

    out = tmp_path / "new" / "run"
    paths = check_outputs({"--out": str(out), "--cache-dir": str(out / "cache"),
                           "--track tensorboard:X": str(out / "tb")})
    assert paths["--cache-dir"] == out / "cache"
    with pytest.raises(ConfigError, match="--out .* is inside --cache-dir"):  # by design only one way round
        check_outputs({"--out": str(out / "inner"), "--cache-dir": str(out)})
    with pytest.raises(ConfigError, match="same path"):
        check_outputs({"--out": str(out), "--export-clean": str(out / "a" / "..")})


def test_the_run_and_its_cache_and_tracker_inside_it_work(data, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    code, _, err = run_cli([*command("finetune", data, out), "--strategy", "linear_probe",
                            "--cache-dir", str(out / "cache"), "--track", f"tensorboard:{out / 'tb'}"], capsys)
    assert code in (0, None), err
    assert (out / "metrics.json").is_file() and any((out / "tb").glob("events.out.tfevents.*"))


# ---- --track targets that cannot work: refused before training ------------------------------------------------
def test_an_unreachable_server_is_refused_in_seconds_before_training(data, tmp_path, capsys):
    pytest.importorskip("mlflow")
    import mlflow  # noqa: F401  (imported before the clock starts: the check is what is timed)

    out = tmp_path / "out"
    start = time.monotonic()
    line = refused([*command("finetune", data, out), "--track", "mlflow:http://127.0.0.1:1"], capsys)
    assert time.monotonic() - start < 5
    assert "cannot reach 127.0.0.1:1" in line and not out.exists()


def test_a_server_that_never_answers_is_refused_after_the_timeout(data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    import transferlab.tracking as tracking

    monkeypatch.setattr(tracking, "CONNECT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))  # a lookup that hangs
    out = tmp_path / "out"
    start = time.monotonic()
    line = refused([*command("finetune", data, out), "--track", "mlflow:http://tracking.invalid:5000"], capsys)
    assert time.monotonic() - start < 5
    assert "no answer within 0.3 s" in line and not out.exists()


@pytest.mark.parametrize("spec, needs, message", [
    ("mlflow:sqlite:////proc/x.db", "mlflow", "nothing can be created in /proc"),
    ("tensorboard:/proc/transferlab_tb", "tensorboard", "nothing can be created in /proc"),
    ("tensorboard:{tmp}/notes.txt/tb", "tensorboard", "is a file, not a folder"),
    ("mlflow:sqlite:///{tmp}/notes.txt/x.db", "mlflow", "is a file, not a folder"),
    ("mlflow:sqlite:///{tmp}/adir", "mlflow", "is a folder; give a file name"),
    ("mlflow:http://127.0.0.1:99999", "mlflow", "the port is not a number"),
])
def test_a_track_target_that_cannot_be_written_is_refused_before_training(spec, needs, message, data, tmp_path,
                                                                          capsys):
    if spec.count("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    pytest.importorskip(needs)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "adir").mkdir()
    out = tmp_path / "out"
    line = refused([*command("finetune", data, out), "--track", spec.format(tmp=tmp_path)], capsys)
    assert message in line and not out.exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
