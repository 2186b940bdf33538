"""The report: its numbers are the runs' own metrics.json numbers; gaps; plots; sections; a real browser."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compare.conftest import load_json, run_folder
from transferlab import stats

FINISHED = ("linear_probe", "full", "scratch")


def _metrics(grid_dir: Path, strategy: str) -> dict:
    return load_json(run_folder(grid_dir, strategy) / "metrics.json")


def _history(grid_dir: Path, strategy: str) -> list[dict]:
    path = run_folder(grid_dir, strategy) / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _record_name(results: dict, strategy: str) -> str:
    return results["scratch_choice"]["selected"] if strategy == "scratch" else strategy


def test_numbers_match_each_runs_metrics(grid_dir):
    results = load_json(grid_dir / "results.json")
    runs = {r["strategy"]: r for r in results["runs"]}
    md = (grid_dir / "report.md").read_text()
    rows = {r["strategy"]: r for r in csv.DictReader(open(grid_dir / "results.csv"))}
    for name in FINISHED:
        m = _metrics(grid_dir, name)
        v = runs[_record_name(results, name)]["values"]
        assert v["val_accuracy"] == m["val"]["accuracy"]
        assert v["trainable_params"] == m["trainable_params"] and v["train_seconds"] == m["train_seconds"]
        assert v["samples_per_second"] == m["samples_per_second"] and v["peak_memory_mb"] == m["peak_memory_mb"]
        assert v["best_epoch"] == m["best_epoch"]
        best = next(h for h in _history(grid_dir, name) if h["epoch"] == m["best_epoch"])
        # train and validation accuracy of the same (selected) epoch
        assert v["overfit_gap"] == pytest.approx(best["train_accuracy"] - best["val_accuracy"])
        summary = results["summary"][name]
        assert summary["mean"]["val_accuracy"] == pytest.approx(m["val"]["accuracy"])  # one seed
        assert float(rows[name]["val_accuracy_mean"]) == pytest.approx(m["val"]["accuracy"])
        table_row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert f"{m['val']['accuracy']:.3f}" in table_row and f"{m['trainable_params']:,}" in table_row
        assert f"| {m['best_epoch']} |" in table_row  # an epoch, not "2.0"


def test_negative_transfer_gap_and_flags(grid_dir):
    """One seed each on the same validation images: McNemar's exact test on the runs' own per-example
    correctness (examples.safetensors), Holm-corrected over the strategies compared with the baseline."""
    from transferlab.runs import run_examples

    results = load_json(grid_dir / "results.json")
    md = (grid_dir / "report.md").read_text()
    scratch_correct, scratch_labels = run_examples(run_folder(grid_dir, "scratch"), "val")
    expected = {}
    for name in ("linear_probe", "full"):
        correct, labels = run_examples(run_folder(grid_dir, name), "val")
        assert (labels == scratch_labels).all()  # the same examples in the same order
        expected[name] = stats.mcnemar(scratch_correct, correct)
    adjusted = dict(zip(expected, stats.holm(list(expected.values()))))
    for name, test in adjusted.items():
        s = results["summary"][name]
        gap = _metrics(grid_dir, "scratch")["val"]["accuracy"] - _metrics(grid_dir, name)["val"]["accuracy"]
        assert s["negative_transfer_gap"] == pytest.approx(gap) == pytest.approx(test.estimate)
        assert s["vs_scratch"]["method"] == "McNemar exact" and s["vs_scratch"]["family"] == 2
        assert s["vs_scratch"]["p_adjusted"] == pytest.approx(test.p_adjusted)
        assert s["transfer_hurt"] == (gap > 0 and test.p_adjusted < 0.05)
        row = next(line for line in md.split("## Transfer and overfitting gaps")[1].splitlines()
                   if line.startswith(f"| {name} |"))
        assert f"{gap:+.3f} [{test.low:+.3f}, {test.high:+.3f}]" in row
        assert ("transfer hurt" in row) == s["transfer_hurt"]
        assert ("within noise" in row) == (not test.significant)
    assert "Reading" in md and "Best: **" in md and "Noise rule:" in md and stats.RULE in md


def test_weight_change_per_depth_group(grid_dir):
    section = load_json(grid_dir / "results.json")["sections"]["weight_change"]
    groups, change = section["groups"], section["change"]
    assert groups[-1] == "head" and change["linear_probe"][-1] is None  # the new head has no w0
    backbone = [c for c in change["linear_probe"][:-1] if c is not None]
    assert backbone and all(c == 0.0 for c in backbone)  # a linear probe leaves the backbone as it was
    assert any(c > 0 for c in change["full"][:-1] if c is not None)
    assert "scratch" in change  # against its own random init


def test_plots_written_and_embedded(grid_dir):
    md = (grid_dir / "report.md").read_text()
    html = (grid_dir / "report.html").read_text()
    names = re.findall(r"\(plots/(\w+)\.png\)", md)
    assert set(names) >= {"learning_curves", "accuracy_vs_params", "accuracy_vs_time", "weight_change"}
    for n in names:
        assert (grid_dir / "plots" / f"{n}.png").read_bytes()[:4] == b"\x89PNG"
    assert html.count("src='data:image/png;base64,") == len(names)
    assert "plots/" not in html  # self-contained


def test_registered_section_appears(grid_dir, tmp_path):
    from transferlab.compare import report_from_dir
    from transferlab.compare.report import _SECTIONS, Section, Text, register_section

    out = tmp_path / "copy"
    shutil.copytree(grid_dir, out)

    @register_section("extra_test", order=70)
    def extra(ctx):
        return Section("Extra diagnostics", [Text(f"{len(ctx.results.runs)} runs seen")], data={"n": 4})

    try:
        report_from_dir(out)
    finally:
        _SECTIONS.pop("extra_test")
    assert "## Extra diagnostics" in (out / "report.md").read_text()
    assert load_json(out / "results.json")["sections"]["extra_test"] == {"n": 4}


def test_report_renders_in_headless_chromium(grid_dir, tmp_path):
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                                 shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)
    if chromium is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", (grid_dir / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'data-report-ready="1"' in dom, f"page did not finish loading: {proc.stderr[-2000:]}"
    widths = re.findall(r'data-natural-width="(\d+)"', dom)
    images = len(re.findall(r"<img\s", dom))
    assert images >= 4 and len(widths) == images
    assert all(int(w) > 0 for w in widths), widths
    assert "<table" in dom and "linear_probe" in dom and "scratch" in dom


def test_results_json_carries_each_runs_own_val_and_test(grid_dir):
    results = load_json(grid_dir / "results.json")
    for run in results["runs"]:
        if run["status"] == "finished":
            m = _metrics(grid_dir, run["strategy"])
            assert run["val"] == m["val"] and run["test"] == m["test"]
