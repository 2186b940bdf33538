"""Real data sets are found through one setting: `lab run --data-root DIR`, else $TRANSFERLAB_DATA, else nothing
(a lab that reads one is refused in one line, before anything is written); never through the package's location."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import error_line, run_cli
from transferlab.data import DATA_ENV, data_root, shared_dataset
from transferlab.errors import ConfigError
from transferlab.labs import LABS
from transferlab.labs.base import lab_data

READERS = [lab for lab in LABS if lab.datasets]
BUNDLED = [lab for lab in LABS if not lab.datasets]


@pytest.fixture
def no_setting(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_lab_that_reads_a_data_set_without_the_setting_exits_2_in_one_line_and_writes_nothing(tmp_path):
    """The real command, in a fresh process whose environment lacks TRANSFERLAB_DATA, from a folder of its own:
    nothing in the package's location may stand in for the setting."""
    lab = READERS[0]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    env["OMP_NUM_THREADS"] = "1"
    code = ("import sys; from transferlab.cli import main; "
            f"sys.exit(main(['lab', 'run', {lab.name!r}, '--quick', '--out', 'out']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line == (f"transferlab: error: lab `{lab.name}` reads the data set {lab.datasets[0]}: set TRANSFERLAB_DATA "
                    f"(or --data-root) to the folder that holds {lab.datasets[0]}/ (see docs/data.md for where to "
                    f"get it)")
    assert done.stdout == "" and _tree(cwd) == []


def test_data_root_lacking_the_data_set_names_it_and_writes_nothing(tmp_path, capsys, no_setting):
    lab = READERS[0]
    empty = tmp_path / "data"
    empty.mkdir()
    out = tmp_path / "out"
    code, stdout, err = run_cli(["lab", "run", lab.name, "--quick", "--data-root", str(empty), "--out", str(out)],
                                capsys)
    line = error_line(err)
    assert code == 2 and stdout == ""
    assert f"--data-root {empty}" in line and str(empty / lab.datasets[0]) in line and "docs/data.md" in line
    assert not out.exists() and _tree(empty) == []


def test_data_root_comes_before_the_environment(tmp_path, capsys, monkeypatch):
    lab = READERS[0]
    full, empty = tmp_path / "full", tmp_path / "empty"
    for name in lab.datasets:
        (full / name).mkdir(parents=True)
    empty.mkdir()
    monkeypatch.setenv(DATA_ENV, str(full))
    code, _, err = run_cli(["lab", "run", lab.name, "--quick", "--data-root", str(empty), "--out",
                            str(tmp_path / "out")], capsys)
    assert code == 2 and f"--data-root {empty}" in error_line(err) and not (tmp_path / "out").exists()
    assert lab_data(lab) == {n: full / n for n in lab.datasets}  # the setting alone
    monkeypatch.setenv(DATA_ENV, str(empty))
    assert lab_data(lab, full) == {n: full / n for n in lab.datasets}  # the option wins
    with pytest.raises(ConfigError, match=f"TRANSFERLAB_DATA={re.escape(str(empty))}"):
        lab_data(lab)


def test_the_resolver_order_and_an_empty_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.setenv(DATA_ENV, "  ")  # `TRANSFERLAB_DATA= make test`: unset, not the current folder
    assert data_root() is None
    with pytest.raises(ConfigError) as refused:
        shared_dataset("sst2_clean", reader="lab `peft`")
    assert str(refused.value) == ("lab `peft` reads the data set sst2_clean: set TRANSFERLAB_DATA (or --data-root) "
                                  "to the folder that holds sst2_clean/ (see docs/data.md for where to get it)")


def test_run_all_checks_every_lab_first(tmp_path, capsys, no_setting):
    out = tmp_path / "all"
    code, _, err = run_cli(["lab", "run", "all", "--quick", "--out", str(out)], capsys)
    line = error_line(err)
    assert code == 2 and "TRANSFERLAB_DATA" in line and not out.exists()
    assert all(f"`{lab.name}`" in line for lab in READERS)


def test_a_digits_lab_needs_no_setting_and_starts(tmp_path, capsys, no_setting, monkeypatch):
    """Every lab on bundled data passes the data check without the setting; one is started through the CLI (its
    training, a minute or more, replaced by a stand-in that records what it was given)."""
    assert BUNDLED, "the digits labs"
    for lab in BUNDLED:
        assert lab_data(lab) == {}
    from transferlab.labs import runner

    started = {}

    def execute(lab, out, quick, seeds, data_root=None):
        started.update(lab=lab.name, out=out, quick=quick, data_root=data_root)
        return {"lab": lab.name, "verdict": "mixed", "rule": "", "summary": "", "seconds": 0.0}

    monkeypatch.setattr(runner, "execute", execute)
    lab = BUNDLED[0]
    code, stdout, err = run_cli(["lab", "run", lab.name, "--quick", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert started == {"lab": lab.name, "out": tmp_path / "out", "quick": True, "data_root": None}
    assert json.loads(stdout[:stdout.rindex("}") + 1])["lab"] == lab.name


def test_the_lab_list_says_which_data_sets_each_lab_reads(capsys):
    code, out, _ = run_cli(["lab", "list", "--json"], capsys)
    assert code == 0
    assert {e["name"]: e["datasets"] for e in json.loads(out)} == {lab.name: list(lab.datasets) for lab in LABS}
    for lab in LABS:  # the declaration is what the list's words say, and what the lab's code reads
        assert all(name in lab.data for name in lab.datasets), lab.name
        source = Path(sys.modules[lab.run.__module__].__file__).read_text(encoding="utf-8")
        assert set(re.findall(r"ctx\.dataset\(\"([^\"]+)\"\)", source)) <= set(lab.datasets), lab.name
        assert "shared/data" not in source and "parents[" not in source
