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

from tests.compare.conftest import load_json
from transferlab.compare.grid import safe_name

FINISHED = ("linear_probe", "full", "scratch")


def _metrics(grid_dir: Path, strategy: str) -> dict:
    folder = "scratch" if strategy == "scratch" else safe_name(strategy)
    return load_json(grid_dir / "runs" / folder / "0" / "metrics.json")


def _history(grid_dir: Path, strategy: str) -> list[dict]:
    folder = "scratch" if strategy == "scratch" else safe_name(strategy)
    path = grid_dir / "runs" / folder / "0" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_numbers_match_each_runs_metrics(grid_dir):
    results = load_json(grid_dir / "results.json")
    runs = {r["strategy"]: r for r in results["runs"]}
    md = (grid_dir / "report.md").read_text()
    rows = {r["strategy"]: r for r in csv.DictReader(open(grid_dir / "results.csv"))}
    for name in FINISHED:
        m = _metrics(grid_dir, name)
        v = runs[name]["values"]
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


def test_negative_transfer_gap_and_flags(grid_dir):
    results = load_json(grid_dir / "results.json")
    scratch = _metrics(grid_dir, "scratch")["val"]["accuracy"]
    md = (grid_dir / "report.md").read_text()
    sm = _metrics(grid_dir, "scratch")["val"]
    for name in ("linear_probe", "full"):
        s = results["summary"][name]
        m = _metrics(grid_dir, name)["val"]
        gap = scratch - m["accuracy"]
        assert s["negative_transfer_gap"] == pytest.approx(gap)
        # one seed: the binomial standard errors on each run's own n; flagged only beyond 2 se
        se = math.sqrt(sm["accuracy"] * (1 - sm["accuracy"]) / sm["n"] + m["accuracy"] * (1 - m["accuracy"]) / m["n"])
        assert s["vs_scratch"]["se"] == pytest.approx(se)
        hurt = gap > 2 * se
        assert s["transfer_hurt"] == hurt
        row = next(line for line in md.split("## Transfer and overfitting gaps")[1].splitlines()
                   if line.startswith(f"| {name} |"))
        assert f"{gap:+.3f} ± {se:.3f}" in row and (("transfer hurt" in row) == hurt)
        assert ("within noise" in row) == (abs(gap) <= 2 * se)
    assert "Reading" in md and "Best: **" in md and "Noise rule:" in md


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
