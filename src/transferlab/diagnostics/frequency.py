"""Frequency responses of the early layers: what they pass and what they filter out.

Two measurements per model, both in cycles per pixel of the model's input (0 .. 0.5, the Nyquist frequency):

1. The kernels of the first convolution (the first `nn.Conv2d`, in module order, inside depth group 0; LoRA
   merged, added modules skipped). Each kernel w[o] (I, kh, kw), dilated if the layer is, is zero-padded to
   P x P (P = 32, or the kernel's side when larger) and transformed with a 2-D DFT; its power |F|^2 is summed
   over input channels, giving per filter a power map over the P x P frequencies (fx, fy), radial frequency
   r = sqrt(fx^2 + fy^2). The *radial spectrum* averages the power over the frequencies of each ring
   |r - k/P| < 1/(2P), k = 0 .. P/2 (ring 0 is the DC term alone, |sum of the kernel|^2), then over filters.
   The *band energies* are the fractions of the total power (all filters, all P x P frequencies) with
   r in low [0, 1/8), middle [1/8, 1/4) and high [1/4, sqrt(2)/2]: the high band runs to the corners of the
   frequency square, so the three sum to 1 (Parseval). A white kernel's fractions are the bands' shares of the
   frequency square (about 0.05, 0.15, 0.80 at P = 32, given as `bands_white`); compare with those, not with
   1/3: a 3x3 box blur (first zero at 1/3) has 0.33 / 0.47 / 0.20. A stride does not change a kernel's own
   response; it subsamples the output, folding frequencies above 1/(2 stride) onto lower ones, which the
   grating probe (2.) sees and the kernel spectrum does not. Summing power over input channels counts a
   colour-opponent filter's energy, which the grey gratings of 2. do not excite (they see the channel sum
   sum_i w[o, i]). `white_level`, the mean power over filters and the whole frequency square (sum of w^2 per
   filter, by Parseval), is the flat level of a white kernel of the same energy: the plot divides by it.

2. A grating probe through the network, in eval mode. Grey sinusoidal gratings in [0, 1] pixel space,
   g(x, y) = 0.5 + a cos(2 pi (fx x + fy y) + phi), x, y the pixel column and row, (fx, fy) = f (cos t, sin t),
   at radial frequencies f_i = 0.5 i / n (i = 1 .. n: zero, a uniform brightness change, is left out), orientations
   t in 0, 45, 90, 135 degrees and phases phi_j = pi/4 + 2 pi j / m: the pi/4 offset makes the phases' mean
   pixel variance exactly a^2 / 2 at every frequency, Nyquist included (where cos(pi x + phi) has power cos^2 phi).
   At a side S divisible by 2n, every axis-aligned grating has a whole number of cycles across the image.
   The images are normalised with the model's mean and std (as `data._transforms.normalize`) and run in
   chunks; forward hooks keep the raw (unpooled) output h_k of every backbone depth group k (the head is
   skipped). With h_k(grey) the output for the uniform grey image 0.5,

       E_k(f) = mean over orientations and phases of  mean over elements of (h_k(grating) - h_k(grey))^2
       R_k    = the same for white-noise images 0.5 + sigma z, z ~ N(0, 1) per pixel, the same in the three
                colour channels (as the gratings are grey), sigma^2 = a^2 / 2 (equal pixel power), not clipped
                to [0, 1] (so that the power is exact), averaged over a few fixed-seed draws
       gain_k(f) = E_k(f) / R_k.

   1 means group k responds to this frequency as much as to broadband noise of equal power; a linear filter
   H without bias has gain |H(f)|^2 / mean over the frequency square of |H|^2 (averaged over orientations).

Entry point: `frequency_for(run_dir | model_name, compare_to, image_size, ...)` -> FrequencyResult (its plot and
report section: `frequency_report`), with the fine-tuned model, its pre-trained reference and a random
initialisation of the architecture side by side (a run), or the pre-trained model and a random initialisation
(a model name). The random initialisation calls `reset_parameters()` (PyTorch's default init, not the
architecture's own training init) on every backbone module that has one, under a fixed seed (0), and draws
parameters held by modules without one (e.g. a ViT's position embedding) from N(0, 0.02^2); BatchNorm's
running statistics go back to mean 0, variance 1.

Cost: (n x orientations x phases + noise draws + 1) images per model; with the defaults (16 x 4 x 2 + 8 + 1 = 137)
about 13 s per model for efficientnet_lite0 at 224 px on one CPU thread (about 90 ms an image), so
`--model efficientnet_lite0` (two entries) takes about 40 s there, less with more threads. Memory: the group
outputs of one chunk (CHUNK images) at a time.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

PAD = 32  # DFT size for the kernels: frequency resolution 1/32 cycles per pixel
BANDS = (("low", 0.0, 1 / 8), ("middle", 1 / 8, 1 / 4), ("high", 1 / 4, math.inf))  # radial, cycles/pixel
FREQUENCIES = 16  # grating frequencies 1/32, 2/32, ..., 1/2
ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)  # degrees
PHASES = 2
AMPLITUDE = 0.25  # gratings span [0.25, 0.75]
NOISE_DRAWS = 8
SEED = 0  # the noise images and the random initialisation
CHUNK = 32  # images per forward pass: bounds the memory of the kept group outputs
RANDOM_INIT = "random init"
PRETRAINED = "pretrained"

GAIN_DEFINITION = ("gain_k(f) = E_k(f) / R_k: E_k(f) the mean square of h_k(grating) - h_k(grey 0.5) over "
                   "elements, orientations and phases; R_k the same for grey white noise of the gratings' pixel "
                   "variance a^2/2; 1 = passes f as much as broadband noise of equal power")

RunGroups = Callable[[torch.Tensor], Sequence[torch.Tensor | None]]  # (N, 3, H, W) pixels -> per group h_k


# ---- results --------------------------------------------------------------------------------------------
@dataclass
class KernelSpectrum:
    module: str  # the convolution's path in the model
    shape: list[int]  # (O, I, kh, kw)
    stride: list[int]
    dilation: list[int]
    frequency: list[float]  # ring centres k / P, cycles per pixel, 0 .. 0.5
    power: list[float]  # radial power spectrum, mean over filters
    white_level: float  # mean power over filters and the whole frequency square: a white kernel's flat level
    bands: dict[str, float]  # fraction of the power per band, summing to 1
    bands_white: dict[str, float]  # the same for a white kernel: each band's share of the frequency square

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FrequencyEntry:
    groups: dict[str, dict] = field(default_factory=dict)  # name -> {"frequency": [...], "gain": [...]}
    kernels: KernelSpectrum | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {"groups": self.groups, "kernels": self.kernels.to_dict() if self.kernels else None}


@dataclass
class FrequencyResult:
    source: str  # run dir or model name
    image_size: int
    settings: dict  # amplitude, orientations, phases, noise draws, seed
    entries: dict[str, FrequencyEntry] = field(default_factory=dict)  # the first is the main entry
    notes: list[str] = field(default_factory=list)

    @property
    def main(self) -> str:
        return next(iter(self.entries))

    def to_dict(self) -> dict:
        """{"groups", "kernels"} of the main entry at the top, the other entries under "entries"."""
        main = self.entries[self.main].to_dict()
        return {"source": self.source, "label": self.main, "image_size": self.image_size, **main,
                "entries": {label: e.to_dict() for label, e in self.entries.items() if label != self.main},
                "settings": self.settings, "gain_definition": GAIN_DEFINITION, "notes": self.notes}


# ---- 1. kernel spectra ----------------------------------------------------------------------------------
def _dilate(weight: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    """The kernel a dilated convolution applies: taps spread out with zeros between them."""
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return weight
    o, i, kh, kw = weight.shape
    out = weight.new_zeros(o, i, (kh - 1) * dh + 1, (kw - 1) * dw + 1)
    out[:, :, ::dh, ::dw] = weight
    return out


def _radius(size: int) -> torch.Tensor:
    """(size, size) radial frequency of each DFT bin, cycles per pixel (0 .. sqrt(2)/2)."""
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    return torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def power_maps(weight: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """(O, P, P) power |F|^2 of each filter, summed over input channels; weight (O, I, kh, kw)."""
    if weight.dim() != 4:
        raise ValueError(f"expected a convolution weight (O, I, kh, kw), got shape {tuple(weight.shape)}")
    size = max(pad, weight.shape[-2], weight.shape[-1])
    spectrum = torch.fft.fft2(weight.detach().double().cpu(), s=(size, size))  # (O, I, P, P), zero-padded
    return (spectrum.abs() ** 2).sum(1)


def radial_power(weight: torch.Tensor, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """(ring frequencies k/P, k = 0..P/2; (O, P/2 + 1) mean power per ring and filter)."""
    power = power_maps(weight, pad)
    size = power.shape[-1]
    ring = torch.round(_radius(size) * size).long()  # ring k holds |r - k/P| < 1/(2P)
    rings = torch.arange(size // 2 + 1)
    per_ring = torch.stack([power[:, ring == k].mean(1) for k in rings], dim=1)  # (O, P/2 + 1)
    return rings.double() / size, per_ring


def band_energies(weight: torch.Tensor, pad: int = PAD) -> tuple[dict[str, float], dict[str, float]]:
    """(fraction of the power in each band, summed over filters; each band's share of the frequency square)."""
    power = power_maps(weight, pad).sum(0)  # (P, P)
    r = _radius(power.shape[-1])
    total = float(power.sum())
    bands, white = {}, {}
    for name, lo, hi in BANDS:
        inside = (r >= lo) & (r < hi)
        bands[name] = float(power[inside].sum()) / total if total > 0 else float("nan")
        white[name] = float(inside.double().mean())
    return bands, white


def kernel_spectrum(weight: torch.Tensor, pad: int = PAD, module: str = "", stride=(1, 1),
                    dilation=(1, 1)) -> KernelSpectrum:
    """Radial spectrum (mean over filters) and band energies of a convolution weight (O, I, kh, kw)."""
    kernel = _dilate(weight.detach(), tuple(dilation))
    frequency, per_filter = radial_power(kernel, pad)
    bands, white = band_energies(kernel, pad)
    level = float(power_maps(kernel, pad).mean())  # Parseval: the mean over filters of sum w^2
    return KernelSpectrum(module=module, shape=list(weight.shape), stride=list(stride), dilation=list(dilation),
                          frequency=frequency.tolist(), power=per_filter.mean(0).tolist(), white_level=level,
                          bands=bands, bands_white=white)


def first_conv(model) -> tuple[str, nn.Conv2d] | None:
    """(path, module) of the first nn.Conv2d in module order inside depth group 0, skipping modules a strategy
    added (LoRA's, adapters'); None when the group has none (e.g. a patch embedding written as a Linear)."""
    for prefix, top in model.group_modules()[0]:
        for name, module in top.named_modules():
            path = f"{prefix}.{name}" if name else prefix
            if isinstance(module, nn.Conv2d) and not model.is_new_param(path + ".weight"):
                return path, module
    return None


def model_kernels(model, strategy=None) -> tuple[KernelSpectrum | None, str]:
    """The first convolution's spectrum of the weights the forward pass uses (LoRA merged), or None and a note."""
    from transferlab.diagnostics.weights import effective_model

    effective, _ = effective_model(model, strategy) if strategy is not None else (model, "")
    found = first_conv(effective if effective is not None else model)  # adapters: the stem is unchanged
    if found is None:
        return None, "no nn.Conv2d in depth group 0: no kernel spectrum"
    path, conv = found
    return kernel_spectrum(conv.weight, module=path, stride=conv.stride, dilation=conv.dilation), ""


# ---- 2. grating probe -----------------------------------------------------------------------------------
def frequency_grid(n: int) -> list[float]:
    """n radial frequencies 0.5 i / n, i = 1..n (cycles per pixel)."""
    return [0.5 * i / n for i in range(1, n + 1)]


def phase_set(phases: int) -> list[float]:
    """pi/4 + 2 pi j / m: mean cos^2 over the set is 1/2 for every m, so the pixel variance is a^2/2 even at
    Nyquist (pi/4 alone for m = 1)."""
    return [math.pi / 4 + 2 * math.pi * j / phases for j in range(phases)]


def gratings(size: int, params: torch.Tensor, amplitude: float = AMPLITUDE) -> torch.Tensor:
    """(N, 3, S, S) grey gratings in [0, 1]; params (N, 3): frequency (cycles/pixel), orientation (radians),
    phase (radians)."""
    coords = torch.arange(size, dtype=torch.float64)
    y, x = coords[:, None], coords[None, :]  # rows, columns
    f, theta, phi = (params[:, i, None, None] for i in range(3))  # (N, 1, 1) each
    arg = 2 * math.pi * f * (torch.cos(theta) * x + torch.sin(theta) * y) + phi  # (N, S, S)
    img = 0.5 + amplitude * torch.cos(arg)
    return img.float()[:, None].expand(-1, 3, -1, -1)


def white_noise(size: int, draws: int, amplitude: float = AMPLITUDE, seed: int = SEED) -> torch.Tensor:
    """(draws, 3, S, S) grey noise 0.5 + (a / sqrt 2) z, the gratings' pixel variance, fixed seed, unclipped."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(draws, 1, size, size, generator=gen)
    return (0.5 + amplitude / math.sqrt(2) * z).expand(-1, 3, -1, -1)


def _mean_squares(run_groups: RunGroups, images: torch.Tensor, grey: list) -> list[torch.Tensor | None]:
    """Per group: (N,) mean over elements of (h_k(image) - h_k(grey))^2, float64; None where it did not run."""
    outs = run_groups(images)
    res = []
    for out, ref in zip(outs, grey):
        if out is None or ref is None:
            res.append(None)
            continue
        res.append((out.float() - ref.float()).pow(2).flatten(1).mean(1).double().cpu())
    return res


@torch.no_grad()
def grating_gains(run_groups: RunGroups, size: int, frequencies: Sequence[float],
                  orientations: Sequence[float] = ORIENTATIONS, phases: int = PHASES,
                  amplitude: float = AMPLITUDE, noise_draws: int = NOISE_DRAWS, seed: int = SEED,
                  chunk: int = CHUNK) -> list[list[float] | None]:
    """gain_k(f) for every group k `run_groups` returns (None for a group that did not run), at `frequencies`
    (cycles per pixel), orientations in degrees. `run_groups((N, 3, S, S) pixels in [0, 1])` -> a list of the
    groups' outputs, each (N, ...) (normalising the pixels is its business)."""
    grey = list(run_groups(torch.full((1, 3, size, size), 0.5)))
    freq = torch.tensor(list(frequencies), dtype=torch.float64)
    grid = torch.cartesian_prod(freq, torch.tensor([math.radians(t) for t in orientations], dtype=torch.float64),
                                torch.tensor(phase_set(phases), dtype=torch.float64))  # (F*O*P, 3), f slowest
    per_image: list[list[torch.Tensor]] = [[] for _ in grey]
    for start in range(0, len(grid), chunk):
        for k, ms in enumerate(_mean_squares(run_groups, gratings(size, grid[start:start + chunk], amplitude),
                                             grey)):
            if ms is not None:
                per_image[k].append(ms)
    noise = white_noise(size, noise_draws, amplitude, seed)
    reference: list[list[torch.Tensor]] = [[] for _ in grey]
    for start in range(0, noise_draws, chunk):
        for k, ms in enumerate(_mean_squares(run_groups, noise[start:start + chunk], grey)):
            if ms is not None:
                reference[k].append(ms)
    gains: list[list[float] | None] = []
    for k in range(len(grey)):
        if not per_image[k] or not reference[k]:
            gains.append(None)
            continue
        energy = torch.cat(per_image[k]).view(len(freq), -1).mean(1)  # (F,) E_k(f)
        ref = float(torch.cat(reference[k]).mean())  # R_k
        gains.append((energy / ref).tolist() if ref > 0 else [float("nan")] * len(freq))
    return gains


def _raw_copy(output, attention_mask=None) -> torch.Tensor | None:
    """A group's raw output, cloned: a later in-place operation cannot change it."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.detach().clone() if torch.is_tensor(output) else None


class GroupTaps:
    """`run_groups` for a TransferModel: normalises pixels with the model's mean and std, runs it, and returns
    the raw output of each backbone depth group (`_common.GroupOutputs` keeping `_raw_copy`; the head is
    skipped)."""

    def __init__(self, model, device):
        from transferlab.diagnostics._common import GroupOutputs

        self.model, self.device = model.eval(), device
        self.names = [g.name for g in model.depth_groups[:model.num_backbone_groups]]
        self._hooks = GroupOutputs(model, keep=_raw_copy)
        self.mean = torch.tensor(model.cfg.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(model.cfg.std, device=device).view(1, 3, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> list[torch.Tensor | None]:
        x = (pixels.to(self.device) - self.mean) / self.std  # (N, 3, S, S), as data._transforms.normalize
        return self._hooks.run(self.model, {"pixel_values": x})[:len(self.names)]

    def close(self) -> None:
        self._hooks.close()


def model_gains(model, size: int, frequencies: Sequence[float], device, **probe) -> dict[str, dict]:
    """{group name: {"frequency", "gain"}} of a model's backbone depth groups (those that ran)."""
    taps = GroupTaps(model, device)
    try:
        gains = grating_gains(taps, size, frequencies, **probe)
    except RuntimeError as exc:  # e.g. a ViT with a fixed input size
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{model.cfg.name} does not run on {size} px inputs ({first}); try another "
                          f"--image-size") from None
    finally:
        taps.close()
    return {name: {"frequency": list(frequencies), "gain": g} for name, g in zip(taps.names, gains)
            if g is not None}


def measure(model, size: int, frequencies: Sequence[float], device, strategy=None, **probe) -> FrequencyEntry:
    """Kernel spectrum and grating gains of one model."""
    kernels, note = model_kernels(model, strategy)
    model.to(device)
    return FrequencyEntry(groups=model_gains(model, size, frequencies, device, **probe), kernels=kernels,
                          note=note)


# ---- models ---------------------------------------------------------------------------------------------
@torch.no_grad()
def reinitialise(model, seed: int = SEED) -> int:
    """Re-draw every backbone parameter in place, reproducibly: `reset_parameters()` of each module that has
    one, N(0, 0.02^2) for parameters held by modules without it. Returns how many tensors took the fallback.
    The global random state is left as it was."""
    fallback = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.backbone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for p in module.parameters(recurse=False):
                    nn.init.trunc_normal_(p, std=0.02)
                    fallback += 1
    return fallback


def _image_cfg(name: str, weights: str | None):
    from transferlab.models import model_cfg

    cfg = model_cfg(name, weights)
    if cfg.modality != "image":
        raise ConfigError(f"{name} is a {cfg.modality} model: frequency responses are measured on image models "
                          f"only")
    return cfg


def _random_copy(name: str, weights: str | None, overrides: dict | None = None):
    """The architecture with every backbone parameter re-drawn (see `reinitialise`)."""
    from transferlab.models import create_model
    from transferlab.runs import with_overrides

    model = create_model(name, 2, weights=weights)  # the head is not probed: any class count
    model.cfg = with_overrides(model.cfg, overrides or {})
    fallback = reinitialise(model)
    if fallback:
        logger.info("random init: %d parameter tensors without reset_parameters drawn from N(0, 0.02^2)", fallback)
    return model


def _is_run(path: str) -> bool:
    from transferlab.runs import read_run_config

    if not Path(path).is_dir():
        return False
    try:
        return read_run_config(path) is not None
    except ConfigError:  # e.g. a Hugging Face model directory's config.json
        return False


def _check_image(item: str) -> None:
    """ConfigError unless `item` (a run folder or a model name) is an image model."""
    from transferlab.runs import read_run_config

    if _is_run(item):
        config = read_run_config(item)
        _image_cfg(config.model, config.weights)
    else:
        _image_cfg(item, None)


def _load_run(run_dir):
    """(config, fine-tuned model, strategy) of an image run; its data is not read."""
    from transferlab.runs import load_run_model, read_run_config

    if not Path(run_dir).is_dir():
        raise ConfigError(f"--run {run_dir}: no such run directory")
    config = read_run_config(run_dir)
    if config is None:
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    _image_cfg(config.model, config.weights)
    return load_run_model(run_dir)


# ---- entry point ----------------------------------------------------------------------------------------
def _check_options(run_dir, model_name, image_size, frequencies, orientations, phases, amplitude,
                   noise_draws) -> None:
    from transferlab.data._options import MAX_IMAGE_SIZE

    if (run_dir is None) == (model_name is None):
        raise ConfigError("give either a run directory (--run) or a model name (--model)")
    checks = [("--image-size", image_size, 8, MAX_IMAGE_SIZE, True), ("--frequencies", frequencies, 1, 512, False),
              ("--phases", phases, 1, 64, False), ("--noise-draws", noise_draws, 1, 1024, False)]
    for option, value, lo, hi, optional in checks:
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{option} must be an integer from {lo} to {hi}, got {value!r}")
    if not orientations:
        raise ConfigError("give at least one grating orientation")
    if not 0 < amplitude <= 0.5:
        raise ConfigError(f"the grating amplitude must be in (0, 0.5] (gratings stay in [0, 1]), got {amplitude!r}")


def _unique(label: str, taken) -> str:
    out, n = label, 2
    while out in taken:
        out, n = f"{label} #{n}", n + 1
    return out


def frequency_for(run_dir: str | Path | None = None, model_name: str | None = None,
                  compare_to: Sequence[str] = (), image_size: int | None = None, frequencies: int = FREQUENCIES,
                  weights: str | None = None, orientations: Sequence[float] = ORIENTATIONS, phases: int = PHASES,
                  amplitude: float = AMPLITUDE, noise_draws: int = NOISE_DRAWS, random_init: bool = True,
                  device: str | None = None, cache: dict | None = None) -> FrequencyResult:
    """Kernel spectra and grating gains, side by side.

    With `run_dir`: "finetuned (RUN)" (its selected weights), "pretrained" (a fresh build of its start, with the
    strategy's structural changes) and "random init" (the plain architecture, re-drawn). With `model_name` (and
    optionally `weights`, a file as for `--weights`): "pretrained" and "random init". `compare_to`: more runs
    (their fine-tuned model) or model names (pre-trained), added after those. Every entry is probed at the same
    input size: `image_size`, else the run's (or the model's). `cache` (a comparison report's): the pre-trained
    reference's entry, shared by the runs of one grid.
    """
    _check_options(run_dir, model_name, image_size, frequencies, orientations, phases, amplitude, noise_draws)
    if run_dir is not None and weights:
        raise ConfigError("--weights applies with --model: a run's weights are its own")
    compare_to = [str(item) for item in compare_to]
    for item in compare_to:  # an unknown name or a text model: one line before minutes of work
        _check_image(item)
    grid = frequency_grid(frequencies)
    probe = {"orientations": tuple(orientations), "phases": phases, "amplitude": amplitude,
             "noise_draws": noise_draws}
    notes: list[str] = []
    entries: dict[str, FrequencyEntry] = {}
    if run_dir is not None:
        size, dev = _run_entries(run_dir, image_size, grid, probe, random_init, device, cache, entries, notes)
        source = str(run_dir)
    else:
        size, dev = _model_entries(model_name, weights, image_size, grid, probe, random_init, device, entries,
                                   notes)
        source = model_name + (f" (--weights {weights})" if weights else "")
    for item in compare_to:
        _compare_entry(str(item), size, grid, dev, probe, entries)
    notes += [f"{label}: {e.note}" for label, e in entries.items() if e.note]
    settings = {"frequencies": frequencies, "orientations_degrees": list(orientations),
                "phases_radians": phase_set(phases), "amplitude": amplitude, "noise_draws": noise_draws, "seed": SEED}
    return FrequencyResult(source=source, image_size=size, settings=settings, entries=entries, notes=notes)


def _model_entries(model_name, weights, image_size, grid, probe, random_init, device, entries, notes):
    """Fill `entries` for a model by name; returns (input size, device)."""
    from transferlab.data import DataOptions
    from transferlab.data._transforms import image_size as size_of
    from transferlab.diagnostics._common import has_reproducible_start
    from transferlab.models import create_model
    from transferlab.training.trainer import resolve_device

    _image_cfg(model_name, weights)
    model = create_model(model_name, 2, weights=weights)  # the head is not probed: any class count
    size = size_of(model.cfg, DataOptions(image_size=image_size))
    dev = resolve_device(device or "auto")
    if not has_reproducible_start(model_name, weights):
        notes.append(f"{model_name} has no pre-trained weights (a timm architecture without --weights): "
                     f"'{PRETRAINED}' is one random draw of timm's init")
    entries[PRETRAINED] = measure(model, size, grid, dev, **probe)
    del model
    if random_init:
        entries[RANDOM_INIT] = measure(_random_copy(model_name, weights), size, grid, dev, **probe)
    return size, dev


def _run_entries(run_dir, image_size, grid, probe, random_init, device, cache, entries, notes):
    """Fill `entries` for a run; returns (input size, device)."""
    from transferlab.data._transforms import image_size as size_of
    from transferlab.diagnostics._common import has_reproducible_start, reference_model
    from transferlab.runs import with_overrides
    from transferlab.training.trainer import resolve_device

    config, model, strategy = _load_run(run_dir)
    size = image_size or size_of(model.cfg, config.data_options)
    dev = resolve_device(device or config.train.device, fallback=True)
    entries[f"finetuned ({run_dir})"] = measure(model, size, grid, dev, strategy, **probe)
    del model
    if has_reproducible_start(config.model, config.weights):
        reference = reference_model(config, strategy)
        reference.cfg = with_overrides(reference.cfg, config.cfg_overrides)  # read its inputs as the run does
        key = ("frequency", config.model, config.weights, repr(config.cfg_overrides), size, tuple(grid),
               repr(sorted(probe.items())), tuple(n for n, _ in reference.named_parameters()))
        cache = {} if cache is None else cache
        if key not in cache:
            cache[key] = measure(reference, size, grid, dev, strategy, **probe)
        entries[PRETRAINED] = cache[key]
        del reference
    else:  # building it again would be another random draw, not the run's start
        notes.append(f"{config.model} was fine-tuned from a random initialisation (no --weights): there is no "
                     f"pre-trained model to measure")
    if random_init:
        entries[RANDOM_INIT] = measure(_random_copy(config.model, config.weights, config.cfg_overrides), size,
                                       grid, dev, **probe)
    return size, dev


def _compare_entry(item: str, size, grid, dev, probe, entries) -> None:
    from transferlab.models import create_model

    if _is_run(item):
        _, model, strategy = _load_run(item)
        label = f"finetuned ({item})"
    else:
        model, strategy, label = create_model(item, 2), None, f"{PRETRAINED} ({item})"
    entries[_unique(label, entries)] = measure(model, size, grid, dev, strategy, **probe)


# ---- figure ---------------------------------------------------------------------------------------------
