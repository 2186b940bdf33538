"""The model registry and the depth-group contract, on real pre-trained weights."""
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from transferlab.errors import ConfigError
from transferlab.models import create_model, list_models, pretrained_cfg
from transferlab.models.timm_models import efficientnet_lite0_state_dict


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0", num_classes=3).eval()


def _imagenet_top5(model, name: str) -> list[int]:
    import torchvision.transforms as T

    cfg = model.cfg
    tf = T.Compose([T.Resize(int(cfg.input_size / cfg.crop_pct), interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(cfg.input_size), T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
    x = tf(Image.fromarray(load_sample_image(name))).unsqueeze(0)
    with torch.no_grad():
        return model.source_logits({"pixel_values": x}).topk(5).indices[0].tolist()


def test_efficientnet_lite0_weights_are_the_real_imagenet_ones(lite0):
    assert 985 in _imagenet_top5(lite0, "flower.jpg")  # daisy
    top = _imagenet_top5(lite0, "china.jpg")
    assert 442 in top or 497 in top  # bell cote / church


def test_registry_lists_bundled_models_with_configs():
    assert {"efficientnet_lite0", "minilm_l6"} <= set(list_models())
    cfg = pretrained_cfg("efficientnet_lite0")
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    assert pretrained_cfg("minilm_l6").pooling == "mean"


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "test_vit"])
def test_depth_groups_partition_parameters_in_order(name, lite0):
    model = lite0 if name == "efficientnet_lite0" else create_model(name, num_classes=4)
    grouped = model.grouped_parameters()
    names = [n for group in grouped for n, _ in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # every parameter exactly once
    assert all(grouped), "no empty depth group"
    assert model.depth_groups[-1].name == "head"
    assert [n for n, _ in grouped[-1]] == ["head.weight", "head.bias"]


def test_efficientnet_groups_are_stem_stages_final_head(lite0):
    assert [g.name for g in lite0.depth_groups] == (
        ["stem"] + [f"blocks.{i}" for i in range(7)] + ["final_conv", "head"])


def test_minilm_groups_and_pooling():
    model = create_model("minilm_l6", num_classes=2)
    assert [g.name for g in model.depth_groups] == ["embeddings"] + [f"layer.{i}" for i in range(6)] + ["head"]
    batch = dict(model.tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        feats = model.features(batch)
        hidden = model.backbone(**batch).last_hidden_state
    # mean pooling over real tokens only, as the package's 1_Pooling/config.json says
    mask = batch["attention_mask"][1].bool()
    assert torch.allclose(feats[1], hidden[1][mask].mean(0), atol=1e-6)


def test_hf_directory_and_weights_file(tiny_bert_dir, tmp_path):
    model = create_model(str(tiny_bert_dir), num_classes=3)
    assert model.cfg.modality == "text" and len(model.depth_groups) == 4  # embeddings, 2 layers, head
    from safetensors.torch import save_file
    import timm

    src = timm.create_model("resnet18", num_classes=7)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    loaded = create_model("resnet18", num_classes=2, weights=str(tmp_path / "w.safetensors"))
    assert loaded.source_head.out_features == 7
    assert torch.equal(loaded.backbone.conv1.weight, src.conv1.weight)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model 'no_such_net'.*efficientnet_lite0"):
        create_model("no_such_net", num_classes=2)


def test_lite0_state_dict_maps_every_tensor():
    sd = efficientnet_lite0_state_dict()
    assert len(sd) == 296 and "classifier.weight" in sd and sd["classifier.weight"].shape == (1000, 1280)


def test_add_to_group_places_a_module_added_inside_a_block():
    from torch import nn

    model = create_model("resnet18", num_classes=2)  # module-level groups: layer2 covers what is added inside
    host = model.backbone.layer2[0]
    host.extra = nn.Linear(4, 4)
    prefix = next(n for n, m in model.named_modules() if m is host.extra)
    like = next(n for n, _ in model.named_parameters() if n.startswith(prefix.rsplit(".", 1)[0] + ".conv1"))
    assert model.group_index(prefix + ".weight") == model.group_index(like)
    index = model.add_to_group(prefix, like=like)  # idempotent where a group already covers it
    assert index == model.group_index(like) == model.group_index(prefix + ".weight")
    assert sum(len(ps) for ps in model.grouped_parameters()) == len(list(model.named_parameters()))
