"""Every registered lab in its --quick version, run once: its numbers are the ones its run folders hold, and its
verdict is the one the stated rule gives (flip the numbers, the verdict flips)."""
import json
from pathlib import Path

import pytest

from tests.conftest import error_line, run_cli
from transferlab import stats
from transferlab.labs import LABS, RULE, Check, check_verdict, lab_verdict
from transferlab.labs.base import read_key

FLIPPED = {"supported": "not supported", "not supported": "supported", "mixed": "mixed"}


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory) -> Path:
    """`transferlab lab run all --quick` once: every lab's folder and the page."""
    from transferlab.cli import main

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


def test_rule_on_constructed_numbers():
    assert check_verdict([0.1, 0.12, 0.11]) == "supported"
    assert check_verdict([-0.1, -0.12, -0.11]) == "not supported"
    assert check_verdict([0.1, -0.1, 0.02]) == "mixed"  # within its noise
    assert check_verdict([0.3]) == "mixed"  # one value: no spread to judge by
    assert check_verdict([0.019, 0.020, 0.021]) == "supported"
    assert check_verdict([0.019, 0.020, 0.021], margin=0.01) == "supported"
    assert check_verdict([0.019, 0.020, 0.021], margin=0.05) == "not supported"  # reliably under what matters
    # the old rule (mean / se > 2) said supported to these; Student's t with 1 df does not
    assert check_verdict([0.1, 0.12]) == "mixed"
    # no spread: the sign alone no longer decides; a positive margin does
    assert check_verdict([0.2, 0.2]) == "mixed"
    assert check_verdict([1e-12] * 3) == "mixed"
    assert check_verdict([1e-12] * 3, margin=0.01) == "not supported"
    assert check_verdict([0.2, 0.2], margin=0.01) == "supported"
    assert check_verdict([0.1, float("nan"), 0.2]) == "mixed" and check_verdict([0.1, None, 0.2]) == "mixed"
    # "within 2 points" and "as well as": non-inferiority and equivalence on the 90% interval
    assert check_verdict([-0.004, 0.003, -0.001], 0.02, "noninferiority") == "supported"
    assert check_verdict([-0.10, -0.11, -0.12], 0.02, "noninferiority") == "not supported"
    assert check_verdict([-0.004, 0.003, -0.001], 0.02, "equivalence") == "supported"
    with pytest.raises(ValueError):
        check_verdict([0.1, 0.2], 0.0, "equivalence")
    with pytest.raises(ValueError):
        Check("x", "y", [0.1, 0.2], kind="better")
    assert lab_verdict([[0.1, 0.101], [0.3, 0.301]]) == "supported"
    assert lab_verdict([[0.1, 0.101], [-0.3, -0.301]]) == "mixed"
    assert lab_verdict([[-0.1, -0.101], [-0.3, -0.301]]) == "not supported"


def test_the_lab_rule_is_the_stats_rule():
    """The same numbers get the same verdict from labs/verdict.py and from transferlab.stats.seed_test, and a
    check's record carries the interval, the df and the method."""
    cases = [([0.019, 0.020, 0.021], 0.0, "superiority"), ([0.1, 0.12, 0.05], 0.01, "superiority"),
             ([0.1, -0.1, 0.02], 0.0, "superiority"), ([-0.01, 0.004, 0.0], 0.02, "noninferiority"),
             ([0.004, -0.006, 0.001, 0.009], 0.02, "equivalence"), ([0.2, 0.2, 0.2], 0.01, "superiority")]
    for values, margin, claim in cases:
        comparison = stats.seed_test(values, margin, claim)
        assert check_verdict(values, margin, claim) == comparison.verdict
        check = Check("c", "what a positive value means", values, margin=margin, kind=claim)
        d = check.to_dict()
        assert d["verdict"] == comparison.verdict and lab_verdict([check]) == lab_verdict([d])
        assert json.dumps(d["comparison"]) == json.dumps(comparison.to_dict())
        assert {"low", "high", "df", "method", "p_value", "text"} <= set(d["comparison"])
        assert d["stats"]["n"] == len(values) and d["margin"] == margin and d["kind"] == claim
    assert stats.RULE in RULE and "intersection-union" in RULE


def test_lab_list_and_bad_input(capsys, tmp_path):
    code, out, _ = run_cli(["lab", "list", "--json"], capsys)
    assert code == 0 and [e["name"] for e in json.loads(out)] == [lab.name for lab in LABS]
    code, _, err = run_cli(["lab", "run", "nosuchlab", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown lab 'nosuchlab'" in error_line(err)
    code, _, err = run_cli(["lab", "run", LABS[0].name, "--seeds", "1", "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "--seeds must be >= 2" in error_line(err)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "mine.txt").write_text("not a lab")
    code, _, err = run_cli(["lab", "run", LABS[0].name, "--quick", "--out", str(tmp_path / "z")], capsys)
    assert code == 2 and (tmp_path / "z" / "mine.txt").read_text() == "not a lab"


def test_a_lab_folder_continues_only_the_same_lab(lab_runs, capsys):
    folder = lab_runs / LABS[0].name
    code, _, err = run_cli(["lab", "run", LABS[0].name, "--out", str(folder)], capsys)  # not --quick
    assert code == 2 and "choose another --out" in error_line(err)
