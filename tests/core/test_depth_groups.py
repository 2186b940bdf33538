"""Depth groups of timm models are module-level: a group's output (what CKA reads) is its last module's output,
and it is exactly the next group's input."""
import pytest
import torch
from torch import nn

from transferlab.models import create_model
from transferlab.models.timm_models import from_timm
from transferlab.models.transfer_model import _matches

# (timm architecture, input size): random init, tiny inputs.
ARCHS = [("resnet18", 64), ("vit_tiny_patch16_224", 224), ("tf_efficientnet_lite0", 64), ("convnext_atto", 64)]


def _forward_with_group_hooks(model, size: int):
    """One forward pass with, as in diagnostics' GroupOutputs, a forward hook on every module of each group
    (the output kept is the one of the module that ran last), plus a pre-hook on each group's first module.
    Returns (outputs, inputs, order in which groups first ran, the new head's input)."""
    outputs, inputs, order, handles = {}, {}, [], []

    def out_hook(i):
        def fn(module, args, output):
            outputs[i] = output
        return fn

    def in_hook(i):
        def fn(module, args):
            inputs[i] = args[0]
            if i not in order:
                order.append(i)
        return fn

    for i, modules in enumerate(model.group_modules()):
        assert modules, f"group {model.depth_groups[i].name} has no module to hook"
        handles.append(modules[0][1].register_forward_pre_hook(in_hook(i)))
        handles += [m.register_forward_hook(out_hook(i)) for _, m in modules]
    torch.manual_seed(0)
    with torch.no_grad():
        model({"pixel_values": torch.randn(1, 3, size, size)})
    for h in handles:
        h.remove()
    return outputs, inputs, order, inputs[len(model.depth_groups) - 1]


@pytest.fixture(scope="module", params=ARCHS, ids=[a for a, _ in ARCHS])
def timm_model(request):
    arch, size = request.param
    return from_timm(arch, num_classes=3).eval(), size


def test_each_group_output_is_the_next_group_input(timm_model):
    model, size = timm_model
    outputs, inputs, order, features = _forward_with_group_hooks(model, size)
    head = len(model.depth_groups) - 1
    assert order == list(range(head + 1)), "groups run in depth order, the head last"
    names = [g.name for g in model.depth_groups]
    for i in range(head - 1):
        assert torch.equal(outputs[i], inputs[i + 1]), f"{names[i]} -> {names[i + 1]}"
    # The last backbone group's output feeds timm's pooling/head (or is already the pooled features).
    last = outputs[head - 1]
    if last.shape != features.shape:
        with torch.no_grad():
            last = model.backbone.forward_head(last, pre_logits=True)
    assert torch.equal(last, features)


def test_groups_partition_parameters(timm_model):
    model, _ = timm_model
    assert model.depth_groups[-1].name == "head"
    names = [g.name for g in model.depth_groups]
    assert len(set(names)) == len(names)
    for name, _ in model.named_parameters():
        owners = [g.name for g in model.depth_groups if any(_matches(name, p) for p in g.prefixes)]
        assert len(owners) == 1, f"{name} is in groups {owners}"
        assert model.depth_groups[model.group_index(name)].name == owners[0]
    assert [n for n, _ in model.grouped_parameters()[-1]] == ["head.weight", "head.bias"]
    assert all(model.grouped_parameters()), "no empty depth group"


def test_group_modules_are_top_level():
    groups = {g.name: [p.removeprefix("backbone.") for p in g.prefixes]
              for g in from_timm("resnet18", num_classes=2).depth_groups}
    assert groups == {"stem": ["conv1", "bn1", "act1", "maxpool"], "layer1": ["layer1"], "layer2": ["layer2"],
                      "layer3": ["layer3"], "layer4": ["layer4"], "head": ["head"]}


def test_a_module_added_inside_a_block_is_in_the_block_group():
    model = from_timm("resnet18", num_classes=2)
    model.backbone.layer2[0].extra = nn.Linear(4, 4)  # e.g. an adapter
    assert model.depth_groups[model.group_index("backbone.layer2.0.extra.weight")].name == "layer2"


def test_efficientnet_lite0_groups_are_unchanged():
    model = create_model("efficientnet_lite0", num_classes=2)
    summary = [(g["name"], g["params"]) for g in model.group_summary()]
    assert summary == [("stem", 928), ("blocks.0", 896), ("blocks.1", 13968), ("blocks.2", 39712),
                       ("blocks.3", 198480), ("blocks.4", 446784), ("blocks.5", 1652640), ("blocks.6", 605440),
                       ("final_conv", 412160), ("head", 2562)]
    assert model.depth_groups[-2].prefixes == ("backbone.conv_head", "backbone.bn2")
