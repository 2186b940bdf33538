"""BatchNorm under covariate shift: how far the target data's statistics are from the stored ones.

For each BatchNorm layer, with the model in eval mode (as deployed: every layer normalises with its running
statistics), the per-channel mean and variance of the layer's *input* over all target examples (and spatial
positions) are compared with the running mean and variance by the symmetric KL divergence between the two
per-channel Gaussians, averaged over channels:

    SKL = KL(p || q) + KL(q || p) = 1/2 [ (s_p + d^2) / s_q + (s_q + d^2) / s_p ] - 1,   d = m_p - m_q
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from transferlab.diagnostics._common import REPORT_MAX_BATCHES, first_finished_runs, make_loader, save_figure, \
    split_of, target_batches
from transferlab.sections import Bullets, Section, Table, Text
from transferlab.diagnostics.registry import arg, at_least_one, one_of, register_diagnostic, section
from transferlab.errors import ConfigError
from transferlab.nn_utils import is_batchnorm


@dataclass
class BNLayerShift:
    name: str
    index: int  # order of the layer in the forward pass
    group: str  # its depth group
    channels: int
    skl: float  # symmetric KL averaged over channels


@dataclass
class BNShiftResult:
    source: str  # run dir or model name
    data: str
    split: str
    examples: int
    mean_skl: float
    layers: list[BNLayerShift] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def symmetric_kl(m_p: torch.Tensor, v_p: torch.Tensor, m_q: torch.Tensor, v_q: torch.Tensor,
                 eps: float = 1e-5) -> torch.Tensor:
    """Per-channel symmetric KL between N(m_p, v_p) and N(m_q, v_q): KL(p||q) + KL(q||p), variances + eps."""
    # Kept by hand, not torch.distributions: kl_divergence(p, q) + kl_divergence(q, p) with scale sqrt(v + eps) is
    # the same quantity, eps included, but not the same numbers: it takes a square root only to square it again
    # and adds log(v_q/v_p) + log(v_p/v_q), which cancel here exactly and there only to rounding (up to 4e-7
    # relative in float32, 8e-16 in float64, measured on random channels).
    v_p, v_q = v_p + eps, v_q + eps
    d2 = (m_p - m_q) ** 2
    return 0.5 * ((v_p + d2) / v_q + (v_q + d2) / v_p) - 1.0


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if is_batchnorm(m)
            and m.running_mean is not None]


class _Moments:
    def __init__(self):
        self.n = 0
        self.s = self.ss = None
        self.order = -1

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, B*H*W)
        s, ss = x.sum(1), (x * x).sum(1)
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss
        self.n += x.shape[1]

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.s / self.n
        return mean, (self.ss / self.n - mean ** 2).clamp(min=0)


@torch.no_grad()
def bn_shift(model, loader, device, max_batches: int | None = None) -> tuple[list[BNLayerShift], int]:
    """(per-layer shift in forward order, examples seen)."""

    model.eval()
    layers = batchnorm_layers(model)
    moments = {name: _Moments() for name, _ in layers}
    counter = [0]
    handles = []
    for name, module in layers:
        def hook(mod, inputs, name=name):
            m = moments[name]
            if m.order < 0:
                m.order = counter[0]
                counter[0] += 1
            m.add(inputs[0])
        handles.append(module.register_forward_pre_hook(hook))
    examples = batches = 0
    try:
        for batch in target_batches(loader, device, max_batches):
            model(batch)
            examples += batch["labels"].numel()
            batches += 1
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, module in layers:
        m = moments[name]
        if m.n == 0:
            continue
        mean, var = m.mean_var()
        skl = symmetric_kl(mean, var, module.running_mean.double(), module.running_var.double(), module.eps)
        out.append(BNLayerShift(name=name, index=m.order, group=_group_of(model, name),
                                channels=int(mean.numel()), skl=float(skl.mean())))
    out.sort(key=lambda layer: layer.index)
    return out, examples


def _group_of(model, module_name: str) -> str:
    try:
        return model.depth_groups[model.group_index(module_name)].name
    except (KeyError, AttributeError):
        return ""


def bn_shift_for(data_path: str | None, run_dir: str | Path | None = None, model_name: str | None = None,
                 split: str = "val", image_size: int | None = None, max_batches: int | None = None,
                 batch_size: int = 64) -> BNShiftResult:
    """BatchNorm shift of a run's selected weights (or a pre-trained model by name) on a data set (default for a
    run: its own data)."""
    from transferlab.training.trainer import resolve_device

    if (run_dir is None) == (model_name is None):
        from transferlab.errors import ConfigError

        raise ConfigError("give either a run directory or a model name")
    if run_dir is not None:
        from transferlab.runs import load_run

        config, data, model, _ = load_run(run_dir, data_path)
        device = resolve_device(config.train.device, fallback=True)
        source = str(run_dir)
        data_path = config.data
    else:
        if data_path is None:
            from transferlab.errors import ConfigError

            raise ConfigError("with a model name, give the data to measure")
        from transferlab.data import DataOptions
        from transferlab.runs import RunConfig, prepare

        config = RunConfig(model=model_name, data=data_path, strategy="linear_probe",
                           data_options=DataOptions(image_size=image_size))
        data, model, _ = prepare(config)
        device = resolve_device("auto")
        source = model_name
    if not batchnorm_layers(model):
        from transferlab.errors import ConfigError

        raise ConfigError(f"{source} has no BatchNorm layers ({model.cfg.architecture}): there are no running "
                          f"statistics to compare with the data")
    model.to(device)
    layers, examples = bn_shift(model, make_loader(data, split_of(data, split), batch_size), device, max_batches)
    mean = sum(layer.skl for layer in layers) / len(layers) if layers else float("nan")
    return BNShiftResult(source=source, data=str(data_path), split=split, examples=examples, mean_skl=mean,
                         layers=layers)


def plot_bn_shift(results: list[BNShiftResult], path: str | Path, labels: list[str] | None = None) -> Path:
    """One line per result: symmetric KL by BatchNorm layer depth (log scale), saved as PNG."""
    from transferlab.figures import new_figure

    fig, ax = new_figure(figsize=(8, 4))
    for i, r in enumerate(results):
        label = labels[i] if labels else r.data
        ax.plot([layer.index for layer in r.layers], [max(layer.skl, 1e-6) for layer in r.layers], marker=".",
                label=f"{label} (mean {r.mean_skl:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("BatchNorm layer (input side -> output side)")
    ax.set_ylabel("symmetric KL, target vs running stats")
    ax.set_title("BatchNorm statistics shift")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---- the command and the report section (transferlab.diagnostics.registry) ---------------------------------
def bn_shift_section(ctx) -> Section | None:
    rows, data, notes = [], {}, []
    for name, run_dir in first_finished_runs(ctx, "bn_shift"):
        try:
            r = bn_shift_for(None, run_dir=run_dir, max_batches=REPORT_MAX_BATCHES)
        except ConfigError as exc:
            if "no BatchNorm layers" in str(exc):  # a text model: the section has nothing to say
                continue
            notes.append(f"{name}: not computed ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name}: not computed ({type(exc).__name__}: {exc})")
            continue
        if not r.layers:
            continue
        data[name] = r.to_dict()
        worst = max(r.layers, key=lambda layer: layer.skl)
        rows.append([name, f"{r.mean_skl:.4f}", f"{worst.name} ({worst.skl:.3f})"])
    if not rows:
        return None
    blocks = [Table(["strategy", "mean BN symmetric KL", "largest (layer)"], rows),
              Text("How far the validation data's per-channel statistics at each BatchNorm layer are from the "
                   "layer's stored running statistics (symmetric KL of the two Gaussians, mean over channels "
                   "and layers). Large values suggest `transferlab adapt-bn`.")]
    if notes:
        blocks.append(Bullets(notes))
    return Section("BatchNorm statistics on the target data", blocks, data=data | {"notes": notes})


@register_diagnostic(
    "bn-shift", order=30, help="per BatchNorm layer: symmetric KL of target vs running statistics",
    arguments=[
        one_of(arg("--run", help="run directory (its selected weights)"),
               arg("--model", help="a pre-trained model by name"), required=True),
        arg("--data", required=True),
        arg("--split", choices=["val", "test", "train"], default="val"),
        arg("--image-size", type=int, help="with --model: input size (default: the model's)"),
        arg("--max-batches", type=at_least_one, help="use at most this many batches (>= 1)"),
        arg("--plot", metavar="FILE.png", help="write the shift by layer depth as a PNG"),
        arg("--json", action="store_true"),
    ],
    section=section("bn_shift", order=67, build=bn_shift_section))
def cmd_bn_shift(args) -> None:
    from transferlab.console import print_json, print_table
    from transferlab.outputs import check_plot_path

    plot = check_plot_path(args.plot, inputs={"--data": args.data})
    r = bn_shift_for(args.data, run_dir=args.run, model_name=args.model, split=args.split,
                     image_size=args.image_size, max_batches=args.max_batches)
    if plot:
        plot_bn_shift([r], plot)
    if args.json:
        print_json(r.to_dict())
        return
    print_table([["#", "layer", "group", "channels", "sym_kl"]] +
           [[str(x.index), x.name, x.group, str(x.channels), f"{x.skl:.4g}"] for x in r.layers])
    print(f"mean symmetric KL over {len(r.layers)} BatchNorm layers: {r.mean_skl:.4g} "
          f"({r.examples} {r.split} examples of {r.data})")
