"""Cut points: forward_from(forward_until(x, k), k) is model(x) for every backbone depth group k, and
forward_from runs only the groups after k (what a frozen-prefix cache trains from)."""
import pytest
import torch
from torch import nn

from transferlab.models import create_model

IMAGE_MODELS = [("resnet18", 32), ("test_vit", None), ("vit_tiny_patch16_224", None),
                ("tf_efficientnet_lite0", 32), ("test_efficientnet", 32), ("convnext_atto", 64)]


def _image_batch(model, size):
    size = size or model.cfg.input_size  # a ViT at its own size
    torch.manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, size, size)}


def _text_batch(model):
    texts = ["a short one", "a much longer sentence, so the first one is padded"]
    return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def minilm():
    return create_model("minilm_l6", 3).eval()


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir):
    return create_model(str(tiny_bert_dir), 3).eval()


def _assert_identity(model, batch):
    with torch.no_grad():
        expected = model(batch)
        for k in range(model.num_backbone_groups):
            got = model.forward_from(model.forward_until(batch, k), k)
            assert torch.allclose(got, expected, atol=1e-6), (model.cfg.name, k)
            assert torch.equal(got, expected), (model.cfg.name, k)  # the same ops: exactly equal


def _calls(modules):
    counts = {"n": 0}

    def hook(*_):
        counts["n"] += 1

    handles = [m.register_forward_hook(hook) for _, m in modules]
    return counts, handles


def _assert_prefix_not_run(model, batch):
    with torch.no_grad():
        model.forward_until(batch, 0)  # the first call also checks the split once, with a full forward
        first = model.group_modules()[0]
        assert first
        for k in range(model.num_backbone_groups):
            h = model.forward_until(batch, k)
            counts, handles = _calls(first)
            try:
                model.forward_from(h, k)
            finally:
                for handle in handles:
                    handle.remove()
            assert counts["n"] == 0, (model.cfg.name, k)
        # forward_until stops after group k: the last backbone group's modules do not run for k = 0
        counts, handles = _calls(model.group_modules()[model.num_backbone_groups - 1])
        try:
            model.forward_until(batch, 0)
        finally:
            for handle in handles:
                handle.remove()
        assert counts["n"] == 0


@pytest.mark.parametrize("name,size", IMAGE_MODELS, ids=[n for n, _ in IMAGE_MODELS])
def test_image_cut_points_reproduce_the_forward(name, size):
    model = create_model(name, 3).eval()
    batch = _image_batch(model, size)
    _assert_identity(model, batch)
    _assert_prefix_not_run(model, batch)


def test_cut_point_shapes():
    vit = create_model("test_vit", 3).eval()
    tokens = vit.forward_until(_image_batch(vit, None), 0)
    assert tokens.ndim == 3 and tokens.shape[0] == 2  # (B, N, D), the cls token included
    resnet = create_model("resnet18", 3).eval()
    assert resnet.forward_until(_image_batch(resnet, 32), 1).shape == (2, 64, 8, 8)  # after layer1


@pytest.mark.parametrize("which", ["tiny_bert", "minilm"])
def test_text_cut_points_reproduce_the_forward(which, request):
    model = request.getfixturevalue(which)
    batch = _text_batch(model)
    assert (batch["attention_mask"] == 0).any()  # the padded row makes the mask matter
    h = model.forward_until(batch, 1)
    assert set(h) == {"hidden", "attention_mask"}
    assert h["hidden"].shape == (*batch["input_ids"].shape, model.feature_dim)
    _assert_identity(model, batch)
    _assert_prefix_not_run(model, batch)


def test_bad_cut_point_and_model_without_cut_points():
    model = create_model("test_efficientnet", 3)
    with pytest.raises(ValueError, match="cut point"):
        model.forward_from(torch.zeros(1), model.num_backbone_groups)  # the head is no cut point
    from transferlab.models import PretrainedCfg, TransferModel

    bare = TransferModel(PretrainedCfg(name="bare", modality="image"), nn.Identity(), 4, 2, [])
    with pytest.raises(NotImplementedError, match="bare"):
        bare.forward_until({"pixel_values": torch.zeros(1, 4)}, 0)


def test_a_walk_that_misses_a_step_is_refused():
    model = create_model("test_vit", 3).eval()
    model._cuts.steps[-1] = model._cuts.steps[-2]  # a walk that is not the forward: the final norm never runs
    with pytest.raises(NotImplementedError, match="cannot split"):
        model.forward_until(_image_batch(model, None), 0)
