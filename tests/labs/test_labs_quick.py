"""Every registered lab in its --quick version, run once: its numbers are the ones its run folders hold, and its
verdict is the one the stated rule gives (flip the numbers, the verdict flips). The same machinery on a toy lab of
tiny runs, and the rule on constructed numbers, are tests/labs/test_lab_machinery.py (the default set)."""
import json
from pathlib import Path

import pytest

from tests.conftest import error_line, run_cli, shared_data
from transferlab import stats
from transferlab.labs import LABS, RULE, check_verdict, lab_verdict
from transferlab.labs.base import read_key

# The second set (make test-all): the real labs take minutes; their machinery is checked in seconds by the default set.
pytestmark = pytest.mark.slow

FLIPPED = {"supported": "not supported", "not supported": "supported", "mixed": "mixed"}


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory) -> Path:
    """`transferlab lab run all --quick` once: every lab's folder and the page (some labs read real data sets:
    skipped where $TRANSFERLAB_DATA lacks them)."""
    from transferlab.cli import main

    for name in dict.fromkeys(n for lab in LABS for n in lab.datasets):
        shared_data(name)
    out = tmp_path_factory.mktemp("labs") / "all"
    assert main(["lab", "run", "all", "--quick", "--out", str(out)]) == 0
    return out


def record(lab_runs: Path, name: str) -> dict:
    path = lab_runs / name / "result.json"
    assert path.is_file(), f"lab {name} wrote no result.json (see labs.md for its failure)"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_numbers_are_read_back_from_the_lab_runs(lab_runs, name):
    r = record(lab_runs, name)
    folder = lab_runs / name
    assert r["readings"], "a lab's checks rest on numbers it read back from its runs"
    for reading in r["readings"]:
        assert read_key(folder / reading["file"], reading["key"]) == reading["value"]
    for run in r["runs"]:  # every run a lab made is a finished run folder inside it
        assert (folder / run / "metrics.json").is_file()
    assert (folder / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["lab"] in (folder / "README.md").read_text()


@pytest.mark.parametrize("name", [lab.name for lab in LABS])
def test_verdict_follows_the_rule(lab_runs, name):
    r = record(lab_runs, name)
    assert r["rule"] == RULE and stats.RULE in r["rule"] and r["quick"] is True and len(r["seeds"]) == 2
    for c in r["checks"]:
        if c["paired"]:  # decided on per-example arrays result.json does not hold (stats.paired_runs)
            assert c["comparison"]["n_examples"] > 0 and c["kind"] == "superiority"
        else:
            assert c["verdict"] == check_verdict(c["values"], c["margin"], c["kind"])
        assert c["comparison"]["verdict"] == c["verdict"] and c["comparison"]["margin"] == c["margin"]
    assert r["verdict"] == lab_verdict(r["checks"])
    # superiority checks at margin 0, their numbers flipped (each check's sign): supported and not supported swap
    plain = [c["values"] for c in r["checks"] if c["kind"] == "superiority" and c["margin"] == 0]
    assert lab_verdict([[-v for v in vs] for vs in plain]) == FLIPPED[lab_verdict(plain)]


def test_the_page_holds_every_lab(lab_runs):
    page = (lab_runs / "labs.md").read_text()
    html = (lab_runs / "labs.html").read_text()
    for lab in LABS:
        r = record(lab_runs, lab.name)
        assert f"`{lab.name}`" in page and f"**{r['verdict']}**" in page
        assert f"id='lab-{lab.name}'" in html
    assert html.count("data:image/png;base64,") == len(LABS)  # self-contained
    assert "Labs that failed" not in page


def test_a_lab_folder_continues_only_the_same_lab(lab_runs, capsys):
    folder = lab_runs / LABS[0].name
    code, _, err = run_cli(["lab", "run", LABS[0].name, "--out", str(folder)], capsys)  # not --quick
    assert code == 2 and "choose another --out" in error_line(err)
