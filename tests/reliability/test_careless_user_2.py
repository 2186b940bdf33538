"""More of what a careless user (or an attacker) does: a lab folder holding a run made with other settings, a lab
killed while it wrote its data, a folder of the user's own matches.csv given as a contamination --out, a class
folder named with terminal escape sequences, and absurd sizes (vib:dim=1e9, --seeds 1e12)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_IMAGE_MODEL
from tests.reliability.conftest import error_line, run_cli
from transferlab.errors import ConfigError


def _tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ROOT."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---- 1. a lab re-run keeps a finished run only when it was made with the settings asked -----------------------
def _tiny(lr: float):
    from transferlab.labs._runs import run_config

    return run_config(TINY_IMAGE_MODEL, "digits:0-2", "full", 0, image_size=32, epochs=1, max_train=40,
                      batch_size=32, lr=lr)


def test_a_finished_lab_run_with_other_settings_is_refused_and_the_same_one_kept(tmp_path):
    from transferlab.labs.base import LabContext

    ctx = LabContext(out=tmp_path, quick=True, seeds=[0, 1])
    first = ctx.finetune("full_s0", _tiny(1e-3))  # a real run, finished
    before = _tree(tmp_path / "runs" / "full_s0")
    with pytest.raises(ConfigError) as refused:
        ctx.finetune("full_s0", _tiny(5e-2))  # another lab's (or another version's) run under this name
    message = str(refused.value)
    assert "\n" not in message and "full_s0" in message and "train.lr" in message and "--out" in message
    assert _tree(tmp_path / "runs" / "full_s0") == before  # nothing changed
    assert ctx.finetune("full_s0", _tiny(1e-3)) == first  # the same settings: kept, not trained again
    assert _tree(tmp_path / "runs" / "full_s0") == before


# ---- 2. a lab's data folders are written whole or not at all ---------------------------------------------------
class _Killed(BaseException):
    """What a kill looks like to the writer: nothing after it runs (not an Exception: no handler catches it)."""


def _kill_after(monkeypatch, k: int) -> None:
    from PIL import Image

    real_save, saved = Image.Image.save, [0]

    def save(self, *args, **kwargs):
        if saved[0] >= k:
            raise _Killed()
        saved[0] += 1
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


def _digits_folder(out: Path) -> Path:
    from transferlab.labs._digits_folder import write_digits_folder

    return write_digits_folder(out, size=8)


def _leak_folder(out: Path) -> Path:
    from transferlab.labs.contamination import pick_leak, split_digits, write_folder

    splits = split_digits({"train": 60, "val": 10, "test": 30})
    write_folder(out, splits, pick_leak(splits["test"], 6, 0))
    return out


@pytest.mark.parametrize("writer", [_digits_folder, _leak_folder], ids=["digits_folder", "contamination"])
def test_a_data_folder_killed_mid_write_is_never_reused_and_is_rebuilt_whole(tmp_path, monkeypatch, writer):
    clean = writer(tmp_path / "clean" / "data")
    with monkeypatch.context() as m:
        _kill_after(m, 25)
        with pytest.raises(_Killed):
            writer(tmp_path / "lab" / "data")
    final = tmp_path / "lab" / "data"
    assert not final.exists()  # no half-written folder where the lab reads its data
    # a kill that the writer's own clean-up did not survive leaves a temporary folder of its name pattern
    stale = tmp_path / "lab" / ".data.x1y2.transferlab-tmp"
    (stale / "train" / "0").mkdir(parents=True)
    (stale / "train" / "0" / "0.png").write_bytes(b"half")
    mine = tmp_path / "lab" / ".data.mine"  # the user's: not the pattern, kept
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    writer(final)
    assert _tree(final) == _tree(clean)
    assert not stale.exists() and (mine / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in final.parent.iterdir()) == [".data.mine", "data"]


@pytest.mark.parametrize("writer", [_digits_folder, _leak_folder], ids=["digits_folder", "contamination"])
def test_a_folder_half_written_in_place_is_rebuilt_and_a_users_file_refused(tmp_path, writer):
    clean = writer(tmp_path / "clean" / "data")
    final = tmp_path / "lab" / "data"
    half = sorted(_tree(clean))[:7]  # what an older, in-place writer left when killed: no completion marker
    for relative in half:
        if relative != "done":
            (final / relative).parent.mkdir(parents=True, exist_ok=True)
            (final / relative).write_bytes(b"torn")
    writer(final)
    assert _tree(final) == _tree(clean)
    (final / "done").unlink()
    (final / "train" / "README.txt").write_text("the user's", encoding="utf-8")
    with pytest.raises(ConfigError, match="README.txt"):
        writer(final)
    assert (final / "train" / "README.txt").read_text(encoding="utf-8") == "the user's"


# ---- 3. contamination --out: a folder is a check's only by its summary.json ------------------------------------
@pytest.mark.parametrize("name", ["matches.csv", "contamination.html"])
def test_contamination_refuses_a_folder_of_the_users_own_matches_csv(tmp_path, capsys, name):
    from transferlab.labs.contamination import split_digits, write_folder

    data = tmp_path / "digits"
    write_folder(data, split_digits({"train": 30, "val": 0, "test": 10}))
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("target_id,source_id\nmy,own\n", encoding="utf-8")
    code, _, err = run_cli(["contamination", "--source", str(data), "--target", str(data), "--methods", "exact",
                            "--calibrate", "0", "--out", str(out)], capsys)
    assert code == 2
    assert "not a transferlab contamination check" in error_line(err)
    assert [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_text(encoding="utf-8") == "target_id,source_id\nmy,own\n"


# ---- 4. class names are printed with their control characters escaped -----------------------------------------
def test_predict_escapes_terminal_sequences_in_class_names(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for i, cls in enumerate(("a\x1b[2Jb", "plain")):
        (data / cls).mkdir(parents=True)
        for j in range(6):
            Image.new("RGB", (16, 16), (250 * i, 20 * j, 250 * (1 - i))).save(data / cls / f"{j}.png")
    run = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", str(data), "--image-size", "16",
                            "--epochs", "1", "--batch-size", "8", "--out", str(run)], capsys)
    assert code == 0, err
    code, printed, err = run_cli(["predict", "--run", str(run), str(data / "a\x1b[2Jb" / "0.png")], capsys)
    assert code == 0, err
    assert "\x1b" not in printed
    assert "a\\x1b[2Jb" in printed  # the label and the input path, as repr writes them


def test_tables_escape_control_characters(capsys):
    from transferlab.cli._common import print_table
    from transferlab.predict import tsv_field

    print_table([["class", "n"], ["a\x1b[2Jb", "3"], ["c\x9bd\x07", "1"]])
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x9b" not in printed and "\x07" not in printed
    assert "a\\x1b[2Jb" in printed and "c\\x9bd\\x07" in printed
    assert tsv_field("a\x1b[2Jb\tc\\") == "a\\x1b[2Jb\\tc\\\\"


# ---- 5. absurd sizes: one line at parse time ------------------------------------------------------------------
@pytest.mark.parametrize("head, said", [("vib:dim=1000000000", "65536"), ("mlp:hidden=1000000000", "65536"),
                                        ("vib:dim=1e9", "not a valid int")])
def test_an_absurd_head_width_is_refused_in_one_line(tmp_path, capsys, head, said):
    out = tmp_path / "run"
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-2", "--image-size", "32",
                            "--epochs", "1", "--head", head, "--out", str(out)], capsys)
    assert code == 2
    line = error_line(err)
    assert said in line and (said != "65536" or "memory" in line)
    assert not out.exists()


@pytest.mark.parametrize("seeds", ["1e12", "1000000000000", "101"])
def test_absurd_lab_seeds_are_refused_in_one_line(tmp_path, capsys, seeds):
    out = tmp_path / "lab"
    code, _, err = run_cli(["lab", "run", "freezing", "--quick", "--seeds", seeds, "--out", str(out)], capsys)
    assert code == 2
    assert "--seeds" in error_line(err) and "100" in error_line(err)
    assert not out.exists()


def test_lab_seeds_within_the_limit_are_accepted():
    from transferlab.cli.labs import _seed_count
    from transferlab.labs.runner import _seeds

    assert _seed_count("3") == 3 and _seed_count("1e2") == 100 and _seed_count("1") == 1  # 1: the runner's line
    assert _seeds(False, 100) == list(range(100))
    with pytest.raises(ConfigError, match="at most 100"):
        _seeds(False, 10**12)
    assert np.array_equal(np.arange(3), _seeds(True, 3))
