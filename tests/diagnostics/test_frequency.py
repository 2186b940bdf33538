"""Frequency responses: kernel spectra against numpy's DFT, the grating probe against the analytic transfer
function of hand-made filters, the CLI on the tiny run and the report section."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from transferlab.diagnostics.frequency import (
    band_energies,
    frequency_grid,
    grating_gains,
    kernel_spectrum,
    radial_power,
    reinitialise,
)

BOX = torch.ones(1, 1, 3, 3) / 9
LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
SIZE = 48  # the gratings below have whole cycles across 48 px: circular convolution is exact


def box_1d(f: float) -> float:
    """Frequency response of the 1-D box [1, 1, 1] / 3."""
    return (1 + 2 * math.cos(2 * math.pi * f)) / 3


def depthwise(kernel: torch.Tensor):
    """A one-layer "network": the same filter on each colour channel, circular padding (no border effects)."""
    kh, kw = kernel.shape[-2:]
    conv = nn.Conv2d(3, 3, (kh, kw), groups=3, bias=False, padding=(kh // 2, kw // 2), padding_mode="circular")
    conv.weight.data[:] = kernel
    return lambda x: [conv(x)]


# ---- kernels --------------------------------------------------------------------------------------------
def test_box_blur_is_low_pass_and_laplacian_high_pass():
    box, lap = kernel_spectrum(BOX), kernel_spectrum(LAPLACIAN)
    assert box.frequency[0] == 0 and box.frequency[-1] == 0.5 and len(box.frequency) == 17  # 32-point DFT
    assert box.power[0] == pytest.approx(1.0)  # |sum of the kernel|^2
    assert box.white_level == pytest.approx(1 / 9)  # Parseval: sum of w^2
    assert all(a > b for a, b in itertools.pairwise(box.power[:11]))  # falls towards its zero at 1/3
    assert box.bands["low"] > 5 * box.bands_white["low"] and box.bands["high"] < box.bands_white["high"] / 3
    assert box.bands["low"] > box.bands["high"]
    assert lap.power[0] == pytest.approx(0.0, abs=1e-12)  # a Laplacian ignores constant images
    assert lap.bands["high"] > 0.95 and lap.power[-1] > 100 * lap.power[2]
    for k in (box, lap):
        assert sum(k.bands.values()) == pytest.approx(1.0)
        assert sum(k.bands_white.values()) == pytest.approx(1.0)


def test_radial_power_equals_numpy_dft_ring_average():
    weight = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    freq, per_filter = radial_power(weight)
    padded = np.zeros((4, 3, 32, 32))
    padded[:, :, :5, :5] = weight.numpy()
    power = (np.abs(np.fft.fft2(padded)) ** 2).sum(1)  # (4, 32, 32)
    f = np.fft.fftfreq(32)
    r = np.hypot(f[:, None], f[None, :])
    for k in (0, 3, 16):
        ring = np.abs(r - k / 32) < 0.5 / 32
        assert freq[k].item() == k / 32
        np.testing.assert_allclose(per_filter[:, k].numpy(), power[:, ring].mean(1), rtol=1e-10)
    low = power.sum(0)[r < 1 / 8].sum() / power.sum()
    assert band_energies(weight)[0]["low"] == pytest.approx(low)


def test_a_dilated_kernel_is_measured_as_applied():
    spread = torch.zeros(1, 1, 5, 5)
    spread[:, :, ::2, ::2] = 1 / 9  # the taps a dilation-2 box reaches
    dilated, explicit = kernel_spectrum(BOX, dilation=(2, 2)), kernel_spectrum(spread)
    assert dilated.shape == [1, 1, 3, 3]
    np.testing.assert_allclose(dilated.power, explicit.power, rtol=1e-12)
    assert dilated.bands["high"] > kernel_spectrum(BOX).bands["high"]  # a second pass band around 1/2


# ---- grating probe --------------------------------------------------------------------------------------
def test_box_blur_gain_falls_and_laplacian_gain_rises_with_frequency():
    grid = frequency_grid(8)
    blur = grating_gains(depthwise(BOX), SIZE, grid, noise_draws=4)[0]
    edges = grating_gains(depthwise(LAPLACIAN), SIZE, grid, noise_draws=4)[0]
    assert blur[-1] < 0.2 * blur[0]
    assert all(a > b for a, b in itertools.pairwise(blur[:5]))
    assert edges[-1] > 5 * edges[0]
    assert all(a < b for a, b in itertools.pairwise(edges[:6]))
    assert all(g >= 0 for g in blur + edges)


def test_axis_aligned_gain_equals_the_analytic_transfer_function():
    # a horizontal [1, 1, 1] / 3: gain |B(f)|^2 / mean |B|^2 = 3 B(f)^2 for gratings varying along x
    grid = [i / SIZE for i in range(1, SIZE // 2 + 1)]
    gain = grating_gains(depthwise(torch.ones(1, 1, 1, 3) / 3), SIZE, grid, orientations=(0.0,))[0]
    at_third = grid.index(16 / SIZE)
    assert gain[at_third] == pytest.approx(0.0, abs=1e-9)  # the box's exact null at 1/3
    for i in (0, 5, 11, len(grid) - 1):
        assert gain[i] == pytest.approx(3 * box_1d(grid[i]) ** 2, rel=0.05)  # the noise reference: 8 draws
    # gratings varying along y pass untouched: B(0) = 1
    vertical = grating_gains(depthwise(torch.ones(1, 1, 1, 3) / 3), SIZE, [0.25], orientations=(90.0,))[0]
    assert vertical[0] == pytest.approx(3.0, rel=0.05)


def test_random_init_redraws_the_first_convolution_reproducibly():
    from transferlab.models import create_model

    a, b = create_model(TINY_IMAGE_MODEL, 2), create_model(TINY_IMAGE_MODEL, 2)
    before = a.backbone.conv_stem.weight.detach().clone()
    state = torch.random.get_rng_state()
    reinitialise(a)
    reinitialise(b)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    assert not torch.allclose(a.backbone.conv_stem.weight, before)
    assert torch.equal(a.backbone.conv_stem.weight, b.backbone.conv_stem.weight)


# ---- CLI and report -------------------------------------------------------------------------------------
def _check_entry(entry: dict) -> None:
    assert entry["groups"] and "head" not in entry["groups"]
    for curve in entry["groups"].values():
        assert len(curve["frequency"]) == len(curve["gain"]) == 4
        assert all(0 <= f <= 0.5 for f in curve["frequency"])
        assert all(math.isfinite(g) and g >= 0 for g in curve["gain"])
    k = entry["kernels"]
    assert k["module"] == "backbone.conv_stem" and len(k["frequency"]) == len(k["power"])
    assert sum(k["bands"].values()) == pytest.approx(1.0)


def test_cli_run_json(tiny_run, capsys, tmp_path):
    plot = tmp_path / "frequency.png"
    code, out, err = run_cli(["diagnose", "frequency", "--run", str(tiny_run), "--frequencies", "4",
                              "--plot", str(plot), "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["label"] == f"finetuned ({tiny_run})" and d["image_size"] == 32
    assert list(d["entries"]) == ["pretrained", "random init"]
    for entry in [d] + list(d["entries"].values()):
        _check_entry(entry)
    random, pretrained = d["entries"]["random init"], d["entries"]["pretrained"]
    assert random["kernels"]["power"] != pretrained["kernels"]["power"]
    assert random["groups"]["stem"]["gain"] != pretrained["groups"]["stem"]["gain"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_model_table_and_weights(source_weights, capsys):
    code, out, err = run_cli(["diagnose", "frequency", "--model", TINY_IMAGE_MODEL, "--image-size", "32",
                              "--frequencies", "4"], capsys)
    assert code == 0, err
    assert "pretrained: grating gain" in out and "random init: grating gain" in out and "kernel energy" in out
    assert "no pre-trained weights" in out  # a timm architecture without --weights is a random draw
    code, out, err = run_cli(["diagnose", "frequency", "--model", TINY_IMAGE_MODEL, "--weights", str(source_weights),
                              "--image-size", "32", "--frequencies", "4", "--no-random-init", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    _check_entry(d)
    assert d["entries"] == {} and d["notes"] == []


def test_compare_to_adds_entries(tiny_run, capsys):
    code, out, err = run_cli(["diagnose", "frequency", "--run", str(tiny_run), "--frequencies", "4",
                              "--no-random-init", "--compare-to", str(tiny_run), TINY_IMAGE_MODEL, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert list(d["entries"]) == ["pretrained", f"finetuned ({tiny_run}) #2", f"pretrained ({TINY_IMAGE_MODEL})"]
    assert d["entries"][f"finetuned ({tiny_run}) #2"]["groups"] == d["groups"]  # the same model, measured again


@pytest.mark.parametrize("args, says", [
    (["--model", TINY_IMAGE_MODEL, "--frequencies", "0"], "--frequencies"),
    (["--model", TINY_IMAGE_MODEL, "--image-size", "1"], "--image-size"),
    (["--run", "/nonexistent/run"], "no such run directory"),
    (["--model", "minilm_l6"], "image models only"),
    (["--model", "no_such_model_xyz"], "no_such_model_xyz"),
    (["--model", TINY_IMAGE_MODEL, "--compare-to", "minilm_l6"], "image models only"),
])
def test_bad_options_give_one_line(args, says, capsys):
    code, _, err = run_cli(["diagnose", "frequency", *args], capsys)
    assert code == 2 and says in error_line(err)


def test_report_section(report_ctx):
    from transferlab.diagnostics import report  # registers the frequency section
    from transferlab.sections import Figure, Table, list_sections

    assert "frequency" in list_sections()
    ctx = report_ctx
    section = report._frequency_section.frequency_section(ctx)
    assert isinstance(section.blocks[0], Figure) and section.blocks[0].png[:4] == b"\x89PNG"
    table = section.blocks[1]
    assert isinstance(table, Table) and [r[0] for r in table.rows] == ["pre-trained", "full"]
    assert len(ctx.cache) == 1  # the reference, for the other runs of the grid
    from types import SimpleNamespace

    broken = SimpleNamespace(results=SimpleNamespace(strategies=["x"], finished_runs=lambda name: [
        SimpleNamespace(run_dir="/nonexistent", seed=0)]), cache={})
    assert "Not computed" in report._frequency_section.frequency_section(broken).blocks[0].text


def test_a_run_from_random_weights_has_no_pretrained_entry(tmp_path, capsys):
    """Building its start again would be another random draw: measuring it would give numbers that change from
    call to call (and a comparison report that differs between a grid and its resumed copy)."""
    out = tmp_path / "scratch_run"
    assert run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-2", "--image-size", "32",
                    "--max-train", "30", "--epochs", "1", "--out", str(out)], capsys)[0] in (0, None)
    code, text, _ = run_cli(["diagnose", "frequency", "--run", str(out), "--frequencies", "4", "--json"], capsys)
    d = json.loads(text)
    assert code in (0, None) and "pretrained" not in d["entries"] and "random init" in d["entries"]
    assert any("no pre-trained model to measure" in n for n in d["notes"])
