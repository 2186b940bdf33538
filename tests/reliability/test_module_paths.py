"""Task modules handed over by someone else, and where `modules merge` / `modules export` may write.

- A module's metadata names its files; a crafted one (`../../x`, `/etc/hostname`, `sub/x`, a symlink, an
  unknown name) must make every reader refuse, reading and writing nothing outside the module.
- export copies a module for others to load: a pickle in it is refused before anything is copied.
- --out never lands on, in, or around the module or its run, in any spelling, and --overwrite deletes only
  what transferlab wrote there.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.reliability.conftest import error_line, run_cli, snapshot
from transferlab.errors import UnsafeFileError
from transferlab.modules import META, find_modules, load_task_module
from transferlab.outputs import RUN_FOLDER, RUN_FORMAT, folder_state


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """A 1-epoch LoRA run on saved tiny base weights (merge rebuilds the base from them and checks its
    fingerprint; a random-init base would not match)."""
    import timm
    from safetensors.torch import save_file

    from transferlab.cli import main

    root = tmp_path_factory.mktemp("module_paths")
    torch.manual_seed(0)
    base = timm.create_model(TINY_IMAGE_MODEL, num_classes=10)
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(root / "base.safetensors"))
    out = root / "run"
    try:
        main(["finetune", "--model", TINY_IMAGE_MODEL, "--weights", str(root / "base.safetensors"), "--data",
              "digits", "--image-size", "16", "--max-train", "60", "--epochs", "1", "--strategy", "lora",
              "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert (out / "task_module" / "adapter_model.safetensors").is_file()
    return out


@pytest.fixture
def tree(tmp_path) -> Path:
    """A folder that holds everything a test touches, so one snapshot shows any damage."""
    path = tmp_path / "tree"
    path.mkdir()
    return path


@pytest.fixture
def run(lora_run, tree) -> Path:
    return Path(shutil.copytree(lora_run, tree / "run"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_meta(module: Path, **changes) -> None:
    meta = json.loads((module / META).read_text())
    meta.update(changes)
    (module / META).write_text(json.dumps(meta))


def _refused(args: list[str], capsys) -> str:
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    return error_line(err)


# ---- crafted metadata ---------------------------------------------------------------------------------------
LISTED = {  # an entry added to meta["files"] -> what must appear in the error
    "parent traversal": "../../outside.txt",
    "absolute": "/etc/hostname",
    "sub-folder": "sub/dir.bin",
    "unknown name": "notes.txt",
    "empty": "",
    "dot-dot": "..",
    "NUL": "module.safetensors\x00.txt",
}
SYMLINKED = ("module.safetensors", "adapter_model.safetensors", META)


def _crafted_module(run: Path, tree: Path, case: str) -> Path:
    """A standalone copy of the run's module at tree/m1/module, made hostile; targets of its bad entries exist
    (tree/outside.txt, module/sub/dir.bin, module/notes.txt) so the old code read and copied them."""
    module = Path(shutil.copytree(run / "task_module", tree / "m1" / "module"))
    (tree / "outside.txt").write_text("secret outside the module")
    (module / "sub").mkdir()
    (module / "sub" / "dir.bin").write_bytes(b"not a module file")
    (module / "notes.txt").write_text("not a module file")
    if case in LISTED:
        files = json.loads((module / META).read_text())["files"]
        _edit_meta(module, files=files + [LISTED[case]])
    else:  # the file moved outside the module, a symlink to it left in its place (the old code followed it)
        elsewhere = tree / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        shutil.move(module / case, elsewhere / case)
        (module / case).symlink_to(elsewhere / case)
    return module


@pytest.mark.parametrize("case", [*LISTED, *(f"symlinked {n}" for n in SYMLINKED)])
def test_crafted_module_is_refused_by_every_reader(run, tree, case, capsys):
    module = _crafted_module(run, tree, case.removeprefix("symlinked "))
    shutil.rmtree(run)  # only the crafted module is left under tree (so list finds it alone)
    before, hostname = snapshot(tree), _digest(Path("/etc/hostname"))
    out = tree / "o1" / "o2" / "out"  # out/../../outside.txt would be tree/o1/outside.txt
    expected = "transferlab_module.json" if case in LISTED else case.removeprefix("symlinked ")
    for args in (["modules", "list", str(tree / "m1")], ["modules", "show", str(module)],
                 ["modules", "show", "--json", str(module)],
                 ["modules", "merge", str(module), "--out", str(out)],
                 ["modules", "export", str(module), "--out", str(out)],
                 ["modules", "export", str(module), "--out", str(out), "--overwrite"]):
        assert expected in _refused(args, capsys), args
    with pytest.raises(UnsafeFileError, match="transferlab_module.json|symbolic link"):
        load_task_module(module)
    assert snapshot(tree) == before, "nothing may change under the tree"
    assert not (tree / "o1").exists()
    assert _digest(Path("/etc/hostname")) == hostname


def test_listed_file_that_is_missing_or_not_listed_is_refused(run, tree, capsys):
    module = Path(shutil.copytree(run / "task_module", tree / "module"))
    (module / "adapter_model.safetensors").unlink()
    assert "missing" in _refused(["modules", "show", str(module)], capsys)
    shutil.copy(run / "task_module" / "adapter_model.safetensors", module)
    files = json.loads((module / META).read_text())["files"]
    _edit_meta(module, files=[f for f in files if f != "adapter_model.safetensors"])  # lora needs it
    assert "adapter_model.safetensors" in _refused(["modules", "export", str(module), "--out",
                                                    str(tree / "out")], capsys)
    assert not (tree / "out").exists()


def test_list_does_not_follow_symlinked_folders(run, tree, capsys):
    """A symlinked folder below a root is not entered (it could lead anywhere, or loop); a module folder named
    on the command line may still be a symlink."""
    root = tree / "root"
    shutil.copytree(run / "task_module", root / "a")
    shutil.copytree(run / "task_module", tree / "elsewhere" / "b")
    (root / "link").symlink_to(tree / "elsewhere")
    (root / "loop").symlink_to(root)
    assert find_modules([root]) == [root / "a"]
    code, out, err = run_cli(["modules", "list", "--json", str(root)], capsys)
    assert code == 0, err
    assert [r["path"] for r in json.loads(out)] == [str(root / "a")]
    code, out, err = run_cli(["modules", "show", "--json", str(root / "link" / "b")], capsys)
    assert code == 0 and json.loads(out)["method"] == "lora", err


# ---- pickles handed over as a module -------------------------------------------------------------------------
from tests.reliability.test_hostile_files import _Exploit, marker  # noqa: E402,F401  the same exploit


@pytest.mark.parametrize("victim", ["module.safetensors", "adapter_model.safetensors"])
@pytest.mark.parametrize("container", ["raw pickle", "torch zip"])
def test_export_refuses_a_pickled_module(run, tree, marker, victim, container, capsys):
    payload = {"head.weight": torch.zeros(1), "x": _Exploit(marker)}
    if container == "raw pickle":
        (run / "task_module" / victim).write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, run / "task_module" / victim)
    before = snapshot(tree)
    line = _refused(["modules", "export", str(run), "--out", str(tree / "exported")], capsys)
    assert victim in line
    assert not (tree / "exported").exists() and snapshot(tree) == before
    assert not marker.exists()


def test_export_refuses_an_adapter_config_that_is_not_json(run, tree, capsys):
    (run / "task_module" / "adapter_config.json").write_bytes(b"\x80\x04not json")
    assert "adapter_config.json" in _refused(["modules", "export", str(run), "--out", str(tree / "e")], capsys)
    assert not (tree / "e").exists()


# ---- where --out may be ---------------------------------------------------------------------------------------
def _spellings(run: Path, tree: Path) -> list[str]:
    """--out naming the run, its module, something inside or around it: absolute, relative (cwd = tree),
    with a trailing slash, through a symlink."""
    (tree / "link").symlink_to(run)
    (tree / "module_link").symlink_to(run / "task_module")
    return [str(run), str(run) + "/", "run", "./run", "./run/", "run/task_module/..", str(tree / "link"),
            "link/", str(run / "task_module"), "module_link", str(run / "checkpoint" / "new"),
            str(run / "task_module" / "new"), str(tree), "."]


@pytest.mark.parametrize("command", ["merge", "export"])
def test_out_on_or_around_the_module_is_refused(run, tree, command, monkeypatch, capsys):
    monkeypatch.chdir(tree)
    spellings = _spellings(run, tree)
    before = snapshot(tree)
    for module in (str(run), "run/task_module", "link"):
        for out in spellings:
            line = _refused(["modules", command, module, "--out", out, "--overwrite"], capsys)
            assert "--out" in line and ("the module's run" in line or "the task module" in line), (out, line)
            assert snapshot(tree) == before, f"--out {out} changed files"
    assert sorted(p.name for p in tree.iterdir()) == ["link", "module_link", "run"]


@pytest.mark.parametrize("command", ["merge", "export"])
def test_out_that_is_empty_or_a_file_is_one_line(run, tree, command, capsys):
    (tree / "a_file").write_text("mine")
    before = snapshot(tree)
    assert "--out is empty" in _refused(["modules", command, str(run), "--out", ""], capsys)
    line = _refused(["modules", command, str(run), "--out", str(tree / "a_file"), "--overwrite"], capsys)
    assert "is an existing file, not a folder" in line
    line = _refused(["modules", command, str(run), "--out", str(tree / "a_file" / "x")], capsys)
    assert "is a file, not a folder" in line
    assert snapshot(tree) == before


@pytest.mark.parametrize("command", ["merge", "export"])
def test_a_folder_of_someone_elses_files_is_kept_even_with_overwrite(run, tree, command, capsys):
    mine = tree / "mine"
    (mine / "checkpoint").mkdir(parents=True)
    (mine / "config.json").write_text(json.dumps({"lr": 0.1, "note": "my own experiment"}))
    (mine / "checkpoint" / "my_model.pt").write_bytes(b"my weights")
    other = tree / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    before = snapshot(tree)
    for out in (mine, other):
        for extra in ([], ["--overwrite"]):
            line = _refused(["modules", command, str(run), "--out", str(out), *extra], capsys)
            assert "not a transferlab" in line and "nothing was changed" in line
    assert snapshot(tree) == before


def test_merge_overwrites_its_own_output_and_keeps_other_files(run, tree, capsys):
    out = tree / "merged"
    code, _, err = run_cli(["modules", "merge", str(run), "--out", str(out)], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["format"] == RUN_FORMAT
    assert folder_state(out, RUN_FOLDER) == "ours"
    (out / "notes.txt").write_text("the user's")
    (out / "checkpoint" / "mine.pt").write_bytes(b"the user's")
    before = snapshot(tree)
    assert "--overwrite" in _refused(["modules", "merge", str(run), "--out", str(out)], capsys)
    assert snapshot(tree) == before
    code, _, err = run_cli(["modules", "merge", str(run), "--out", str(out), "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "the user's"
    assert (out / "checkpoint" / "mine.pt").read_bytes() == b"the user's"
    assert {"config.json", "merge.json"} <= {p.name for p in out.iterdir()}
    assert (out / "checkpoint" / "best.safetensors").is_file()


def test_export_overwrites_its_own_output_and_keeps_other_files(run, tree, capsys):
    out = tree / "exported"
    code, _, err = run_cli(["modules", "export", str(run), "--out", str(out)], capsys)
    assert code == 0, err
    (out / "notes.txt").write_text("the user's")
    before = snapshot(tree)
    assert "--overwrite" in _refused(["modules", "export", str(run), "--out", str(out)], capsys)
    assert snapshot(tree) == before
    code, _, err = run_cli(["modules", "export", str(run), "--out", str(out), "--overwrite"], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "the user's"
    assert {"README.md", META, "module.safetensors", "adapter_config.json", "adapter_model.safetensors"} <= \
        {p.name for p in out.iterdir()}
    for name in ("module.safetensors", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (run / "task_module" / name).read_bytes()
    code, _, err = run_cli(["modules", "show", str(out)], capsys)  # an export is a module
    assert code == 0, err


def test_merge_of_a_module_without_run_config_writes_a_run(run, tree, capsys):
    """A module saved outside a run records no run config: the merged folder still gets a run-format
    config.json, so it is recognised as a run (and a later --overwrite may replace it)."""
    module = Path(shutil.copytree(run / "task_module", tree / "module"))
    _edit_meta(module, run_config=None)
    out = tree / "merged"
    for extra in ([], ["--overwrite"]):
        code, printed, err = run_cli(["modules", "merge", str(module), "--out", str(out), *extra], capsys)
        assert code == 0, err
        assert "--data DATA" in printed  # no data recorded: say that evaluate needs one
        config = json.loads((out / "config.json").read_text())
        assert config["format"] == RUN_FORMAT and config["strategy"] == "full"
        assert config["model"] == TINY_IMAGE_MODEL and config["classes"]
        assert folder_state(out, RUN_FOLDER) == "ours"


# ---- sizes ---------------------------------------------------------------------------------------------------
def test_sizes_are_binary_units_spelled_kib(run, capsys):
    from transferlab.cli.modules import _human

    assert [_human(n) for n in (512, 1536, 5 * 2**20, 3 * 2**30)] == ["512 B", "1.5 KiB", "5.0 MiB", "3.0 GiB"]
    code, out, err = run_cli(["modules", "show", str(run)], capsys)
    assert code == 0, err
    assert "KiB" in out and " KB" not in out and " MB" not in out
