"""The proxy A-distance (transferlab.diagnostics.domain_gap)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from transferlab.diagnostics.domain_gap import proxy_a_distance
from transferlab.errors import ConfigError

# Identical distributions: the cross-validated error is chance up to sampling noise. Over 10 draws of 200 + 200
# examples in 16 dimensions (seeds 100-109) |d_A| was at most 0.18; the band is 0.3.
NOISE_BAND = 0.3


def test_identical_domains_near_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    d, err = proxy_a_distance(x[:200], x[200:])
    assert abs(d) < NOISE_BAND and abs(err - 0.5) < NOISE_BAND / 4


def test_separated_domains_near_two():
    rng = np.random.default_rng(0)
    d, err = proxy_a_distance(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) + 5.0)
    assert d > 1.95 and err < 0.0125


def test_too_few_examples():
    with pytest.raises(ConfigError):
        proxy_a_distance(np.zeros((3, 2)), np.ones((3, 2)))


def test_cli_per_depth_group(tiny_run, capsys):
    from transferlab.cli import main

    main(["diagnose", "domain-gap", "--run", str(tiny_run), "--source-data", "digits:5-9", "--target-data",
          "digits:0-4", "--max-examples", "60", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["examples"] == 60 and len(r["groups"]) >= 3
    assert all(-2 <= g["a_distance"] <= 2 for g in r["groups"])


def test_report_section(report_ctx):
    from transferlab.diagnostics.domain_gap import domain_gap_section

    assert domain_gap_section(report_ctx) is None  # no --source-data: nothing to compare
    report_ctx.source_data = "digits:0-4"
    s = domain_gap_section(report_ctx)
    assert s is not None and list(s.data["full"]) == ["source data vs the grid's data"]


def test_report_section_measures_the_grids_target(report_ctx, tiny_run, inverted_digits):
    """A grid given --target-data: the section measures the grid's data against it, as `diagnose domain-gap` does."""
    from transferlab.diagnostics.domain_gap import domain_gap_for, domain_gap_section

    report_ctx.results.target_data = str(inverted_digits)
    s = domain_gap_section(report_ctx)
    found = s.data["full"]["the grid's data vs its target data"]
    direct = domain_gap_for(tiny_run, "digits:5-9", str(inverted_digits), max_examples=200).to_dict()
    assert found["groups"] == direct["groups"] and found["examples"] == 40


@pytest.fixture(scope="module")
def inverted_digits(tmp_path_factory):
    """40 digits inverted (white on black becomes black on white), as a flat folder of PNG files: a target with
    no labels and an obvious shift."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("inverted")
    for i, image in enumerate(load_digits().images[:40]):
        Image.fromarray((255 - image * 255 / 16).astype(np.uint8)).resize((32, 32)).save(root / f"{i:02d}.png")
    return root


def test_a_flat_target_folder_is_read_whole(tiny_run, inverted_digits):
    from transferlab.diagnostics.domain_gap import domain_gap_for

    r = domain_gap_for(tiny_run, "digits:5-9", str(inverted_digits), max_examples=500)
    assert r.examples == 40  # every image of the folder (the source's val split has more)
    assert r.groups[0].a_distance > 1.5  # inverted pixels: the first group tells the domains apart
