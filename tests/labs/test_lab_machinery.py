"""The lab machinery on a toy lab of real, tiny runs (seconds): numbers read back from its run folders, verdicts
from the stated rule, the page, a kept run reused, a changed lab refused; and the rule on constructed numbers.

The toy lab is defined as the real ones are (a `Lab` whose `run(ctx)` trains through `ctx.finetune`, reads back
with `ctx.read` and returns checks, numbers and a figure) and registered only while a test runs it
(`labs.registry.registered`), so `lab list` and the registry tests see the real labs. Every registered lab on real
data is `tests/labs/test_labs_quick.py` (`pytest -m slow`)."""
from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from transferlab import stats
from transferlab.cli import main
from transferlab.labs import LABS, RULE, Check, check_verdict, lab_verdict
from transferlab.labs._runs import run_config
from transferlab.labs.base import Lab, LabContext, LabResult, read_key
from transferlab.labs.registry import registered

FLIPPED = {"supported": "not supported", "not supported": "supported", "mixed": "mixed"}
PNG = b"\x89PNG\r\n\x1a\n"
STRATEGIES = ("full", "linear_probe")


# ---- the toy lab: two real runs per seed (test_efficientnet, 3 digits, 40 images, 16 px, one epoch) ------------
def _toy_run(ctx: LabContext, lr: float) -> LabResult:
    from transferlab.figures import new_figure

    rows = []
    for seed in ctx.seeds:
        for strategy in STRATEGIES:
            name = f"{strategy}_s{seed}"
            ctx.finetune(name, run_config(TINY_IMAGE_MODEL, "digits:0-2", strategy, seed, image_size=16, epochs=1,
                                          max_train=40, batch_size=32, lr=lr))
            metrics = f"runs/{name}/metrics.json"
            rows.append({"strategy": strategy, "seed": seed,
                         "trainable_params": ctx.read(metrics, "trainable_params"),
                         "val_examples": ctx.read(metrics, "val.n"),
                         "val_accuracy": ctx.read(metrics, "val.accuracy"),
                         "epoch_1_val_loss": ctx.read(f"runs/{name}/history.jsonl", "0.val_loss")})

    def at(strategy, seed, key):
        return next(r[key] for r in rows if (r["strategy"], r["seed"]) == (strategy, seed))

    gaps = []
    for seed in ctx.seeds:  # a measurement of the lab's own, saved and read back like a run's number
        path = ctx.save_measure(f"gap_s{seed}", {"accuracy_gap": at("full", seed, "val_accuracy")
                                                 - at("linear_probe", seed, "val_accuracy")})
        gaps.append(ctx.read(path, "accuracy_gap"))
    checks = [
        Check("full trains more parameters", "trainable parameters of full minus linear_probe's",
              [at("full", s, "trainable_params") - at("linear_probe", s, "trainable_params") for s in ctx.seeds],
              unit="parameters", margin=1.0),
        Check("the same validation examples", "validation examples of full minus linear_probe's",
              [at("full", s, "val_examples") - at("linear_probe", s, "val_examples") for s in ctx.seeds],
              unit="examples", margin=0.5, kind="equivalence"),
        Check("full scores higher", "validation accuracy of full minus linear_probe's", gaps, unit="accuracy"),
    ]
    fig, ax = new_figure()
    for strategy in STRATEGIES:
        ax.plot(ctx.seeds, [at(strategy, s, "val_accuracy") for s in ctx.seeds], "o-", label=strategy)
    ax.legend()
    summary = f"full minus linear_probe validation accuracy per seed: {', '.join(f'{g:+.3f}' for g in gaps)}."
    return LabResult(checks, {"runs": rows}, fig, summary, ["a toy lab of the test suite"])


TOY = Lab(name="toy", title="A toy lab", claim="Full fine-tuning trains more parameters than a linear probe.",
          data="digits 0-2 (bundled), test_efficientnet (random init) at 16 px", minutes=0.1, quick_minutes=0.1,
          run=partial(_toy_run, lr=1e-2))
TOY_CHANGED = replace(TOY, run=partial(_toy_run, lr=5e-2))  # a later version of the lab: other run settings


def _tree(root: Path) -> dict[str, int]:
    """{relative path: mtime in ns} of every file under ROOT."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory) -> Path:
    """`transferlab lab run all --quick` with the toy lab as the only lab: its folder and the page."""
    out = tmp_path_factory.mktemp("labs") / "all"
    with registered([TOY]):
        assert main(["lab", "run", "all", "--quick", "--out", str(out)]) == 0
    return out


def record(lab_runs: Path) -> dict:
    return json.loads((lab_runs / TOY.name / "result.json").read_text())


# ---- what test_labs_quick checks on every real lab, on the toy one ----------------------------------------------
def test_numbers_are_read_back_from_the_lab_runs(lab_runs):
    from transferlab.runs import run_state

    r = record(lab_runs)
    folder = lab_runs / TOY.name
    assert len(r["readings"]) == 4 * 4 + 2  # 4 numbers from each of 4 runs, 2 measures read back
    for reading in r["readings"]:
        assert read_key(folder / reading["file"], reading["key"]) == reading["value"]
    assert sorted(r["runs"]) == sorted(f"runs/{s}_s{seed}" for s in STRATEGIES for seed in (0, 1))
    for run in r["runs"]:  # every run a lab made is a finished run folder inside it
        assert (folder / run).resolve().is_relative_to(folder.resolve())
        assert run_state(folder / run) == "finished" and (folder / run / "metrics.json").is_file()
    assert {Path(x["file"]).parent.as_posix() for x in r["readings"]} == set(r["runs"]) | {"measures"}
    rows = r["numbers"]["runs"]  # the table holds the numbers read, not others
    assert [row["val_accuracy"] for row in rows] == [x["value"] for x in r["readings"] if x["key"] == "val.accuracy"]
    assert (folder / "figure.png").read_bytes()[:8] == PNG
    readme = (folder / "README.md").read_text()
    assert f"Lab `{TOY.name}`" in readme and f"**Verdict: {r['verdict']}.**" in readme


def test_verdict_follows_the_rule(lab_runs):
    r = record(lab_runs)
    assert r["rule"] == RULE and stats.RULE in r["rule"] and r["quick"] is True and r["seeds"] == [0, 1]
    assert [c["name"] for c in r["checks"]] == ["full trains more parameters", "the same validation examples",
                                                 "full scores higher"]
    for c in r["checks"]:
        assert c["verdict"] == check_verdict(c["values"], c["margin"], c["kind"])
        assert c["comparison"]["verdict"] == c["verdict"] and c["comparison"]["margin"] == c["margin"]
    assert r["verdict"] == lab_verdict(r["checks"])
    # the parameter counts differ by the same amount on every seed: a positive margin decides, and flipped
    # numbers flip the verdict
    params, same, _ = r["checks"]
    assert params["values"][0] > 1 and params["verdict"] == "supported" and same["verdict"] == "supported"
    assert check_verdict([-v for v in params["values"]], params["margin"], params["kind"]) == "not supported"
    plain = [c["values"] for c in r["checks"] if c["kind"] == "superiority" and c["margin"] == 0]
    assert plain and lab_verdict([[-v for v in vs] for vs in plain]) == FLIPPED[lab_verdict(plain)]


def test_the_page_holds_every_lab(lab_runs):
    r = record(lab_runs)
    page = (lab_runs / "labs.md").read_text()
    html = (lab_runs / "labs.html").read_text()
    assert f"| [`{TOY.name}`](#lab-{TOY.name}) | {TOY.claim} | **{r['verdict']}** |" in page
    assert f"id='lab-{TOY.name}'" in html and f"<b>Verdict: {r['verdict']}.</b>" in html
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)  # self-contained: the figure itself
    assert [base64.b64decode(i) for i in images] == [(lab_runs / TOY.name / "figure.png").read_bytes()]
    assert "Labs that failed" not in page


def test_a_finished_run_is_kept_when_the_lab_runs_again(lab_runs, monkeypatch):
    import transferlab.runs

    before = record(lab_runs)
    runs = _tree(lab_runs / TOY.name / "runs")
    monkeypatch.setattr(transferlab.runs, "finetune", lambda *a, **k: pytest.fail("a kept run was trained again"))
    with registered([TOY]):
        assert main(["lab", "run", "all", "--quick", "--out", str(lab_runs)]) == 0
    after = record(lab_runs)
    assert _tree(lab_runs / TOY.name / "runs") == runs  # no file of any run written again
    assert after["readings"] == before["readings"] and after["checks"] == before["checks"]


def test_a_lab_folder_continues_only_the_same_lab(lab_runs, capsys):
    folder = lab_runs / TOY.name
    files = _tree(folder)
    with registered([*LABS, TOY]):
        code, _, err = run_cli(["lab", "run", TOY.name, "--out", str(folder)], capsys)  # not --quick
        assert code == 2 and "choose another --out" in error_line(err)
        code, _, err = run_cli(["lab", "run", TOY.name, "--quick", "--seeds", "3", "--out", str(folder)], capsys)
        assert code == 2 and "holds toy with --quick True and 2 seeds" in error_line(err)
    assert _tree(folder) == files


def test_a_changed_lab_is_refused_in_its_old_folder_and_the_page_says_so(lab_runs, tmp_path, capsys):
    """A later version of the lab (other run settings under the same run names) finds the old finished runs:
    they are refused, nothing in them changes, and `lab run all` lists the lab among the failed ones."""
    import shutil

    out = tmp_path / "all"
    shutil.copytree(lab_runs, out)
    runs = _tree(out / TOY.name / "runs")
    with registered([TOY_CHANGED]):
        code, _, err = run_cli(["lab", "run", "all", "--quick", "--out", str(out)], capsys)
    assert code == 2 and "every lab failed" in error_line(err)
    failed = (out / "labs.md").read_text().split("## Labs that failed")[1]
    assert "toy: ConfigError" in failed and "full_s0 was made with other settings" in failed
    assert "train.lr" in failed
    assert _tree(out / TOY.name / "runs") == runs


def test_registered_restores_the_labs():
    names = [lab.name for lab in LABS]
    with pytest.raises(RuntimeError):
        with registered([TOY]):
            assert [lab.name for lab in LABS] == ["toy"]
            raise RuntimeError("a failing test")
    assert [lab.name for lab in LABS] == names
    with pytest.raises(ValueError):
        with registered([TOY, TOY_CHANGED]):
            pass
    assert [lab.name for lab in LABS] == names


# ---- moved from test_labs_quick.py: the rule and the CLI's refusals, no lab run needed --------------------------
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
