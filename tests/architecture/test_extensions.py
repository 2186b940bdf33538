"""One place per extension: a PEFT method is one file whose class declares its facts, a diagnostic is one file
whose decorator declares its command, options and report section. Each test writes such a file into a temporary
folder, imports it (the registration is the decorator in it, nothing else), uses the extension through the
package's ordinary entry points, and leaves the registries as they were."""
from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL

TOY_METHOD = '''
"""A learned per-channel scale on the output of every (non-grouped) Conv2d and Linear layer of the backbone."""
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.strategies.peft_methods import PeftStrategy, register_method
from transferlab.strategies.peft_methods._base import claim_prefix

SEGMENT = "toy_scale"


def _hook(module, inputs, output):
    slot = getattr(module, "toy_active", None)
    if slot is None or not hasattr(module, SEGMENT) or slot not in module.toy_scale:
        return output
    scale = module.toy_scale[slot]
    return output * (scale.view(1, -1, 1, 1) if output.ndim == 4 else scale)


@register_method
class ToyScale(PeftStrategy):
    name = "toy_scale"
    help = "a learned scale per output channel of every Conv2d / Linear layer of the backbone"
    new_segments = (SEGMENT,)
    markers = (f".{SEGMENT}",)
    mergeable = True

    def sites(self, model):
        return [n for n, m in model.backbone.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "groups", 1) == 1]

    def add_slot(self, model, slot):
        super().add_slot(model, slot)
        for site in self.sites(model):
            host = model.backbone.get_submodule(site)
            if not hasattr(host, SEGMENT):
                host.add_module(SEGMENT, nn.ParameterDict())
                host.toy_active = None
                host.register_forward_hook(_hook)
                claim_prefix(model, f"backbone.{site}.{SEGMENT}")
            if slot not in host.toy_scale:
                host.toy_scale[slot] = nn.Parameter(torch.ones(host.weight.shape[0], device=host.weight.device))

    def slot_parameter_names(self, model, slot):
        return {n for n, _ in model.named_parameters() if n.endswith(f".{SEGMENT}.{slot}")}

    @classmethod
    def set_active(cls, model, slot):
        for module in model.backbone.modules():
            if hasattr(module, SEGMENT):
                module.toy_active = slot

    def save_slot(self, model, slot, directory):
        return {n.removesuffix(f".{slot}"): p.detach() for n, p in model.named_parameters()
                if n.endswith(f".{SEGMENT}.{slot}")}

    def load_slot(self, model, slot, directory, tensors):
        params = dict(model.named_parameters())
        expected = {n.removesuffix(f".{slot}"): n for n in self.slot_parameter_names(model, slot)}
        if {k for k in tensors if f".{SEGMENT}" in k} != set(expected):
            raise ConfigError(f"{directory}: toy scales do not fit the model")
        with torch.no_grad():
            for key, name in expected.items():
                params[name].copy_(tensors[key])
        return {}

    def merge_slot(self, model, slot):
        """W <- diag(s) W, b <- s b per host, then the scales go."""
        with torch.no_grad():
            for site in self.sites(model):
                host = model.backbone.get_submodule(site)
                if hasattr(host, SEGMENT):
                    s = host.toy_scale[slot]
                    host.weight.mul_(s.view(-1, *[1] * (host.weight.ndim - 1)))
                    if host.bias is not None:
                        host.bias.mul_(s)
                    delattr(host, SEGMENT)
                    host.toy_active = None

    def structure(self, model):
        return {"sites": len(self.sites(model))}
'''

TOY_DIAGNOSTIC = '''
"""Toy diagnostic: the run's model name and trained-parameter count, times --scale."""
import json
from pathlib import Path

from transferlab.diagnostics.registry import arg, register_diagnostic, section
from transferlab.sections import Section, Text


def toy_section(ctx):
    return Section("Toy", [Text("toy: " + ", ".join(ctx.results.strategies))], data={"toy": True})


@register_diagnostic("toy", help="a toy diagnostic", order=99,
                     arguments=[arg("--run", required=True, help="run directory"),
                                arg("--scale", type=float, default=1.0, help="multiply the count by this"),
                                arg("--json", action="store_true")],
                     section=section("toy_section", order=95, build=toy_section))
def cmd_toy(args):
    config = json.loads((Path(args.run) / "config.json").read_text())
    metrics = json.loads((Path(args.run) / "metrics.json").read_text())
    value = metrics["trainable_params"] * args.scale
    print(json.dumps({"model": config["model"], "value": value}) if args.json else f"toy {value:g}")
'''


def _import_file(path: Path, text: str):
    """Write `text` to `path` and import it as a module of its own (what adding the file to the package does)."""
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy_method(tmp_path):
    from transferlab.strategies.peft_methods import METHODS, unregister_method
    from transferlab.strategies.registry import list_strategies

    before = [c.name for c in list_strategies()]
    module = _import_file(tmp_path / "toy_scale_method.py", TOY_METHOD)
    try:
        yield module.ToyScale
    finally:
        unregister_method("toy_scale")
        sys.modules.pop("toy_scale_method", None)
        assert "toy_scale" not in METHODS and [c.name for c in list_strategies()] == before


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(TINY_IMAGE_MODEL, num_classes=10)
    path = tmp_path_factory.mktemp("toy_base") / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _finetune(out: Path, strategy: str, weights: Path, snap: dict):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig, finetune
    from transferlab.training.config import TrainConfig
    from transferlab.training.trainer import Callback

    class Snap(Callback):
        def on_fit_start(self, trainer):
            snap["before"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
            snap["trainable"] = trainer.strategy.ever_trainable(trainer.model, trainer.config.epochs)

        def on_fit_end(self, trainer, metrics):
            snap["after"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    config = RunConfig(model=TINY_IMAGE_MODEL, data="digits:0-4", strategy=strategy, weights=str(weights),
                       train=TrainConfig(epochs=2, lr=1e-2, device="cpu", batch_size=32),
                       data_options=DataOptions(image_size=16, max_train=96))
    return finetune(config, out, callbacks=[Snap()])


def test_a_peft_method_is_one_file_and_its_decorator(toy_method, tiny_base, tmp_path):
    from torch.utils.data import DataLoader

    from transferlab.modules import load_task_module, merge_task_module, module_summary
    from transferlab.runs import load_run
    from transferlab.strategies import parse_strategy

    strategy = parse_strategy("toy_scale")
    assert [type(p) for p in strategy.parts] == [toy_method]

    # it trains its scales and the new head, and nothing else
    snap: dict = {}
    metrics = _finetune(tmp_path / "run", "toy_scale", tiny_base, snap)
    toy = {n for n in snap["before"] if n.endswith(".toy_scale.default")}
    assert toy and snap["trainable"] == toy | {n for n in snap["before"] if n.startswith("head.")}
    changed = {n for n in snap["before"] if not torch.equal(snap["before"][n], snap["after"][n])}
    assert changed & toy and changed <= snap["trainable"]

    # its task module (task_module.py's format) saves and reloads to the same outputs
    assert metrics["task_module_bytes"] < metrics["full_checkpoint_bytes"]
    _, data, trained, _ = load_run(tmp_path / "run")
    batch = next(iter(DataLoader(data.val, batch_size=16, collate_fn=data.collate)))
    module = load_task_module(tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(trained(batch), module(batch))
    meta = json.loads((tmp_path / "run" / "task_module" / "transferlab_module.json").read_text())
    assert meta["method"] == "toy_scale" and meta["files"] == ["module.safetensors"]
    assert meta["tensors"]["method"] and all(".toy_scale" in k for k in meta["tensors"]["method"])

    # merging follows what it declared: mergeable, and its markers are gone afterwards
    summary = module_summary(tmp_path / "run")
    assert summary["mergeable"]
    merged, report = merge_task_module(tmp_path / "run")
    assert report["max_abs_logit_diff"] <= report["tolerance"]
    assert not [k for k in merged.state_dict() if "toy_scale" in k]


def test_a_peft_method_s_markers_reach_the_shared_code(toy_method):
    from transferlab.strategies.peft_methods._registry import added_markers, is_added, is_mergeable, needed_files

    assert ".toy_scale" in added_markers() and ".lora_" in added_markers() and ".tl_adapter." in added_markers()
    assert is_added("backbone.conv_stem.toy_scale.default") and not is_added("backbone.conv_stem.weight")
    assert is_mergeable("toy_scale") and is_mergeable("lora") and not is_mergeable("adapter")
    assert needed_files("toy_scale") == () and set(needed_files("lora")) == {"adapter_config.json",
                                                                            "adapter_model.safetensors"}


def test_a_method_writing_unknown_files_is_refused(tmp_path):
    from transferlab.errors import ConfigError
    from transferlab.strategies.peft_methods import METHODS

    with pytest.raises(ConfigError, match="not task-module files"):
        _import_file(tmp_path / "bad_method.py", TOY_METHOD.replace('    mergeable = True\n',
                                                                    '    files = ("../evil.bin",)\n', 1))
    sys.modules.pop("bad_method", None)
    assert "toy_scale" not in METHODS


def test_the_packages_find_their_own_modules():
    from transferlab.labs import LABS
    from transferlab.strategies.peft_methods import METHODS
    from transferlab.strategies.registry import list_strategies

    assert {"lora", "adapter", "bitfit"} <= set(METHODS)
    assert {"full", "l2sp", "ewc", "ib_select", "discriminative", "lora"} <= {c.name for c in list_strategies()}
    assert [lab.name for lab in LABS][:2] == ["hierarchy", "frequency"]  # the chapter's order, declared per lab


@pytest.fixture
def toy_diagnostic(tmp_path):
    from transferlab.diagnostics.registry import list_diagnostics, registered_diagnostics
    from transferlab.sections import list_sections

    names, sections = [d.name for d in list_diagnostics()], list_sections()
    with registered_diagnostics():
        yield _import_file(tmp_path / "toy_diagnostic.py", TOY_DIAGNOSTIC)
    sys.modules.pop("toy_diagnostic", None)
    assert [d.name for d in list_diagnostics()] == names and list_sections() == sections


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_base) -> Path:
    out = tmp_path_factory.mktemp("toy_diag") / "bitfit"
    _finetune(out, "bitfit", tiny_base, {})
    return out


def test_a_diagnostic_is_one_file_and_its_decorator(toy_diagnostic, tiny_run, capsys):
    from types import SimpleNamespace

    from tests.conftest import run_cli
    from transferlab.sections import _SECTIONS, list_sections

    code, out, _ = run_cli(["diagnose", "--help"], capsys)
    assert code == 0 and "toy" in out and "a toy diagnostic" in out
    code, out, _ = run_cli(["diagnose", "toy", "--help"], capsys)
    assert code == 0 and "--run RUN" in out and "--scale SCALE" in out and "multiply the count by this" in out

    code, out, _ = run_cli(["diagnose", "toy", "--run", str(tiny_run), "--scale", "2", "--json"], capsys)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert code == 0 and json.loads(out) == {"model": TINY_IMAGE_MODEL, "value": 2.0 * metrics["trainable_params"]}
    code, _, err = run_cli(["diagnose", "toy"], capsys)
    assert code == 2 and "--run" in err

    assert "toy_section" in list_sections()
    section = _SECTIONS["toy_section"][1](SimpleNamespace(results=SimpleNamespace(strategies=["bitfit"])))
    assert section.data == {"toy": True}


def test_existing_diagnostics_declare_their_commands_and_sections():
    from transferlab.diagnostics.registry import list_diagnostics

    table = {d.name: d.section.key if d.section else None for d in list_diagnostics()}
    assert table == {"drift": "cka", "forgetting": "forgetting", "bn-shift": "bn_shift", "frequency": "frequency",
                     "probe": "probe", "domain-gap": "domain_gap"}
