"""Every command's output path, fuzzed: empty, `.`, an existing file, the input itself, inside it, a symlink to
it, someone else's folder with a config.json, each in many spellings. Every call must exit 0 or print one error
line with exit 2, and change no file outside its own output (the whole tree is hashed before and after)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import shared_data
from tests.reliability.conftest import run_cli
from tests.reliability.test_output_safety import tree_hash

TINY = ["--model", "test_efficientnet", "--image-size", "32", "--epochs", "1", "--batch-size", "8"]

# command -> (argv with {out} where the output path goes, the input an output must stay clear of)
COMMANDS = {
    "finetune": (["finetune", *TINY, "--data", "data", "--out", "{out}"], "data"),
    "compare": (["compare", *TINY, "--data", "data", "--strategies", "linear_probe", "--no-scratch",
                 "--out", "{out}"], "data"),
    "adapt-bn": (["adapt-bn", "--run", "run", "--data", "data", "--out", "{out}", "--overwrite"], "run"),
    "modules merge": (["modules", "merge", "lora", "--out", "{out}", "--overwrite"], "lora"),
    "modules export": (["modules", "export", "lora", "--out", "{out}", "--overwrite"], "lora"),
    "data corrupt": (["data", "corrupt", "--data", "data", "--kind", "blur", "--severity", "1", "--out", "{out}"],
                     "data"),
    "export-source": (["export-source", "--run", "run", "--out", "{out}", "--overwrite"], "run"),
    "diagnose drift --plot": (["diagnose", "drift", "--run", "run", "--data", "data", "--plot", "{out}"], "data"),
    "diagnose bn-shift --plot": (["diagnose", "bn-shift", "--run", "run", "--data", "data", "--plot", "{out}"],
                                 "data"),
}
KINDS = ["empty", "dot", "existing file", "the input", "inside the input", "symlink to the input",
         "a user's folder"]


def _path_of(kind: str, input_name: str) -> str:
    return {"empty": "", "dot": ".", "existing file": "file.txt", "the input": input_name,
            "inside the input": f"{input_name}/sub", "symlink to the input": f"link_{input_name}",
            "a user's folder": "mine"}[kind]


SPELLINGS = st.lists(st.sampled_from(["./", "trailing /", "absolute", "x/..", "//"]), max_size=3, unique=True)


def _spell(path: str, spelling: list[str], root: Path) -> str:
    if not path:
        return path if "trailing /" not in spelling else " "  # whitespace only: empty too
    for s in spelling:
        if s == "./" and not path.startswith("/"):
            path = "./" + path
        elif s == "trailing /":
            path = path + "/"
        elif s == "absolute" and not path.startswith("/"):
            path = str(root / path)
        elif s == "x/..":
            path = path.rstrip("/") + "/x/.."
        elif s == "//":
            path = path.replace("/", "//", 1) if "/" in path else path
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """data/ (real photos, flat layout), run/ (a finished run on it), lora/ (a LoRA run with its task module),
    mine/ (a user's folder with config.json and checkpoint/), file.txt, and a symlink to each input."""
    import timm

    from transferlab.cli import main
    from transferlab.safe_io import save_tensors

    hymenoptera = shared_data("hymenoptera")
    root = tmp_path_factory.mktemp("paths")
    for cls in ("ants", "bees"):
        (root / "data" / cls).mkdir(parents=True)
        for src in sorted((hymenoptera / "train" / cls).iterdir())[:6]:
            shutil.copyfile(src, root / "data" / cls / src.name)
    # the LoRA run on saved base weights, so that `modules merge` rebuilds exactly its base
    base = root / "base.safetensors"
    save_tensors(base, timm.create_model("test_efficientnet", num_classes=10).state_dict())
    for name, extra in (("run", []), ("lora", ["--strategy", "lora", "--weights", str(base)])):
        assert main(["finetune", *TINY, "--data", str(root / "data"), "--out", str(root / name), *extra]) in (0, None)
    mine = root / "mine"
    (mine / "checkpoint").mkdir(parents=True)
    (mine / "config.json").write_text('{"learning_rate": 3}')
    (mine / "checkpoint" / "my_model.pt").write_bytes(b"a week of training")
    (root / "file.txt").write_text("notes")
    for name in ("data", "run", "lora"):
        os.symlink(root / name, root / f"link_{name}")
    return root


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(COMMANDS)), kind=st.sampled_from(KINDS), spelling=SPELLINGS)
def test_output_paths_exit_0_or_one_line_and_touch_nothing_else(workdir, command, kind, spelling, capsys,
                                                                 monkeypatch):
    argv_template, input_name = COMMANDS[command]
    out = _spell(_path_of(kind, input_name), spelling, workdir)
    argv = [a.replace("{out}", out) for a in argv_template]
    monkeypatch.chdir(workdir)
    before = tree_hash(workdir)
    code, _, err = run_cli(argv, capsys)
    assert "Traceback" not in err, (argv, err)
    if code in (0, None):
        # allowed to write only its own output, which must not be any of the bad places above
        written = Path(os.path.realpath(workdir / out))
        after = tree_hash(workdir, skip=written)
        assert after == {k: v for k, v in before.items() if not (workdir / k).resolve().is_relative_to(written)}
        pytest.fail(f"{command} accepted {kind} {out!r} as its output")
    assert code == 2, (argv, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferlab: error: "), (argv, err)
    assert tree_hash(workdir) == before, (argv, err)
