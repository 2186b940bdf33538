"""Your own network as a transferlab model (`register_module`): a 1-D CNN over numeric vectors, neither timm nor
Hugging Face, through strategies, a comparison grid with its from-scratch baseline, and drift.

The source: the network pre-trained here, in plain torch, on scikit-learn's digits 0-4 (64-feature vectors); the
target: digits 5-9 (`sklearn:digits:5-9`), read by transferlab's vector data, standardised on its training split.
"""
import json

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models import create_model, list_models, model_cfg, register_module, unregister_module

NAME = "conv1d_digits"
TARGET = "sklearn:digits:5-9"


class Conv1dNet(nn.Module):
    """(B, F) -> (B, 1, F) -> three convolution blocks over the feature axis -> pooled to 4 positions -> fc."""

    def __init__(self, num_classes: int = 5, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv1d(width, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv1d(width, 2 * width, 3, stride=2, padding=1),
                                    nn.BatchNorm1d(2 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool1d(4)
        self.fc = nn.Linear(2 * width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, F)
        h = self.stem(x.unsqueeze(1))  # (B, W, F)
        h = self.block2(self.block1(h))  # (B, 2W, F/2)
        return self.fc(self.pool(h).flatten(1))  # (B, 2W*4) -> (B, C)


def pretrain_on_digits_0_4(path, epochs: int = 30) -> float:
    """Train Conv1dNet on digits 0-4 in plain torch and save its state dict; returns the training accuracy."""
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 5
    x = torch.tensor(digits.data[keep], dtype=torch.float32)  # (N, 64)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    y = torch.tensor(digits.target[keep])
    torch.manual_seed(0)
    net = Conv1dNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x).argmax(1) == y).float().mean().item()
    save_file(net.state_dict(), str(path))
    return accuracy


@pytest.fixture(scope="module")
def own_model(tmp_path_factory):
    weights = tmp_path_factory.mktemp("source") / "conv1d_digits04.safetensors"
    assert pretrain_on_digits_0_4(weights) > 0.95
    register_module(NAME, Conv1dNet, groups=["stem", "block1", "block2"], head="fc", modality="vector",
                    weights=weights, source_task="digits 0-4 (scikit-learn, 64-feature vectors)")
    yield NAME
    unregister_module(NAME)


def changed_keys(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_a_registered_module_is_a_model(own_model):
    model = create_model(own_model, num_classes=3)
    assert [g.name for g in model.depth_groups] == ["stem", "block1", "block2", "head"]
    assert model.source_head.out_features == 5  # fc, kept as the source classifier
    assert model({"input_values": torch.randn(4, 64)}).shape == (4, 3)  # vector batches: (B, F)
    assert model_cfg(own_model).modality == "vector" and own_model in list_models()
    assert all(model.group_index(f"backbone.{n}") < 3 for n, _ in model.backbone.named_parameters())


def test_register_module_refuses_in_one_line(own_model):
    cases = [(dict(name="resnet18", build=Conv1dNet, groups=["stem"], head="fc"), "already a timm model"),
             (dict(name="x1", build=Conv1dNet, groups=["stem", "block1"], head="fc"), "belong to no depth group"),
             (dict(name="x2", build=Conv1dNet, groups=["stem", "nope", "block2"], head="fc"), "matches no parameter"),
             (dict(name="x3", build=Conv1dNet, groups=["stem", "block1", "block2"], head="pool"), "not an nn.Linear"),
             (dict(name="x4", build=Conv1dNet, groups=["stem", "block1", "block2"]), "feature_dim")]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            register_module(**kwargs, modality="vector")
        assert "\n" not in str(info.value)
    assert not {"x1", "x2", "x3", "x4"} & set(list_models())


@pytest.mark.parametrize("strategy", ["freeze:k=1", "linear_probe", "discriminative:decay=0.5"])
def test_strategies_change_exactly_the_intended_parameters(own_model, trained, strategy):
    net, before, after, _ = trained(own_model, TARGET, strategy)
    changed = changed_keys(before, after)
    params = {n for n, _ in net.named_parameters()}
    if strategy == "linear_probe":
        assert changed == {"head.weight", "head.bias"}  # buffers included: BatchNorm statistics kept
    elif strategy == "freeze:k=1":
        frozen = {k for k in before if net.group_index(k) == 0}  # the stem: weights and BatchNorm statistics
        assert frozen and not frozen & changed
        assert {n for n in params if net.group_index(n) >= 1} <= changed
    else:
        assert params <= changed


def test_lora_refuses_a_network_without_linear_or_conv2d_layers(own_model, trained):
    with pytest.raises(ConfigError,
                       match="lora does not apply to .*: its backbone has no Linear or \\(non-grouped\\) Conv2d") as info:
        trained(own_model, TARGET, "lora")
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def grid(own_model, tmp_path_factory):
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("grid") / "cmp"
    args = ["compare", "--model", own_model, "--data", TARGET, "--strategies", "linear_probe,full", "--epochs", "2",
            "--max-train", "200", "--batch-size", "32", "--out", str(out)]
    assert main(args) in (0, None)
    return out


def test_compare_with_scratch_writes_its_report(grid):
    report = (grid / "report.md").read_text()
    assert "linear_probe" in report and "full" in report and "scratch" in report
    results = json.loads((grid / "results.json").read_text())
    assert results
    init = sorted((grid / "scratch_init").glob("seed*.safetensors"))
    assert init  # the baseline's start: a new build() re-initialised, seeded
    from safetensors.torch import load_file

    random = load_file(str(init[0]))
    pretrained = Conv1dNet().state_dict()
    assert set(random) == set(pretrained)


def test_the_scratch_start_is_a_seeded_reinitialisation(own_model, tmp_path):
    from safetensors.torch import load_file

    from transferlab.compare.grid import scratch_support
    from transferlab.models import family_of

    assert scratch_support(own_model)[0] == "weights"
    family = family_of(own_model)
    a, b, c = (family.random_state(own_model, seed) for seed in (0, 0, 1))
    source = load_file(family.cfg(own_model).weights)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the seed alone decides
    assert not torch.equal(a["stem.0.weight"], c["stem.0.weight"])
    assert not torch.equal(a["stem.0.weight"], source["stem.0.weight"])


def test_a_start_is_reproducible_when_build_gives_the_same_weights(own_model):
    from transferlab.diagnostics._common import has_reproducible_start

    assert has_reproducible_start(own_model, None)  # the registered weights file
    register_module("conv1d_random", Conv1dNet, groups=["stem", "block1", "block2"], head="fc", modality="vector")
    try:
        assert not has_reproducible_start("conv1d_random", None)  # build() draws new weights each time
        assert create_model("conv1d_random", 3).source_head is None  # a random classifier is no source
    finally:
        unregister_module("conv1d_random")


def test_compare_refuses_worker_processes_for_a_registered_module(own_model, tmp_path, capsys):
    from transferlab.cli import main
    from transferlab.compare.executor import check_process_local_model

    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--model", own_model, "--data", TARGET, "--strategies", "full", "--jobs", "2",
              "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "--jobs 2: model 'conv1d_digits' was registered with register_module" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "cmp").exists()
    with pytest.raises(ConfigError, match="--executor ray: model 'conv1d_digits'"):
        check_process_local_model(own_model, 1, "ray")


def test_nproc_and_pretrain_refuse_a_registered_module_in_one_line(own_model, tmp_path, capsys):
    from transferlab.cli import main
    from transferlab.pretraining import check_pretrainable
    from transferlab.runs import RunConfig

    with pytest.raises(SystemExit):
        main(["finetune", "--model", own_model, "--data", TARGET, "--nproc", "2", "--oversubscribe",
              "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert "--nproc 2: model 'conv1d_digits' was registered" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="pretrain trains timm architectures"):
        check_pretrainable(RunConfig(model=own_model, data=TARGET))


TOY_FAMILY = '''
"""mlp:<in>x<width>: a two-layer MLP over vectors, random init; a model family in one file."""
from collections import OrderedDict

from torch import nn

from transferlab.models import DepthGroup, ModelFamily, PretrainedCfg, TransferModel, register_family


@register_family
class ToyMlpFamily(ModelFamily):
    name = "toy_mlp"
    order = 50  # after timm

    def claims(self, name):
        return name.startswith("mlp:") and all(p.isdigit() for p in name[4:].split("x"))

    def cfg(self, name, weights=None):
        return PretrainedCfg(name=name, modality="vector")

    def build(self, name, num_classes, weights=None, head="linear"):
        inputs, width = map(int, name[4:].split("x"))
        net = nn.Sequential(OrderedDict(fc1=nn.Linear(inputs, width), act1=nn.ReLU(),
                                        fc2=nn.Linear(width, width), act2=nn.ReLU()))
        groups = [DepthGroup("fc1", ("backbone.fc1", "backbone.act1")), DepthGroup("fc2", ("backbone.fc2",))]
        return TransferModel(self.cfg(name), net, width, num_classes, groups, head=head)

    def reproducible_start(self, name):
        return False  # a random init
'''


def test_a_model_family_is_one_file(tmp_path, trained):
    import importlib.util

    from transferlab.diagnostics._common import has_reproducible_start
    from transferlab.models import family_of, unregister_family

    path = tmp_path / "toy_mlp_family.py"
    path.write_text(TOY_FAMILY)
    spec = importlib.util.spec_from_file_location("toy_mlp_family", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # the decorator registers the family
    try:
        assert family_of("mlp:64x32").name == "toy_mlp" and family_of("resnet18").name == "timm"
        net, before, after, _ = trained("mlp:64x32", TARGET, "freeze:k=1", epochs=1)
        assert [g.name for g in net.depth_groups] == ["fc1", "fc2", "head"]
        assert changed_keys(before, after) == {"backbone.fc2.weight", "backbone.fc2.bias", "head.weight",
                                               "head.bias"}
        assert not has_reproducible_start("mlp:64x32", None)
    finally:
        unregister_family("toy_mlp")
    with pytest.raises(ConfigError, match="unknown model 'mlp:64x32'"):
        create_model("mlp:64x32", 3)


def test_drift_gives_a_cka_per_group(grid):
    from transferlab.diagnostics.drift import drift_for_run

    run = next(p for p in (grid / "runs").rglob("config.json") if "full" in str(p)).parent
    result = drift_for_run(run, batch_size=32)
    assert [g.name for g in result.groups] == ["stem", "block1", "block2", "head"]
    assert all(g.cka is not None and 0 <= g.cka <= 1.0001 for g in result.groups[:-1])
    assert result.note == ""  # a reproducible start: the registered weights file
