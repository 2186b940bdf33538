"""Task modules: save/load/merge give identical outputs; a module refuses a base it was not made for;
two modules on one base keep their accuracy when switching; peft loads the LoRA module on the plain backbone."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import TINY_IMAGE_MODEL
from tests.peft.conftest import METHODS
from transferlab.errors import ConfigError, UnsafeFileError
from transferlab.modules import MultiTaskModel, load_task_module, module_summary, write_merged
from transferlab.runs import load_run
from transferlab.training.evaluate import evaluate


def _val_batch(run_dir):
    config, data, model, _ = load_run(run_dir)
    batch = next(iter(DataLoader(data.val, batch_size=48, collate_fn=data.collate)))
    return data, model, batch


def _accuracy(model, data):
    return evaluate(model, DataLoader(data.val, batch_size=64, collate_fn=data.collate), "cpu")["accuracy"]


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("method", METHODS)
def test_saved_module_reproduces_the_trained_model(method, modality, image_runs, text_runs):
    run = (image_runs if modality == "image" else text_runs)[method]
    data, trained, batch = _val_batch(run.out)
    module = load_task_module(run.out)
    with torch.no_grad():
        assert torch.equal(trained(batch), module(batch))
    metrics = json.loads((run.out / "metrics.json").read_text())
    assert metrics["task_module_bytes"] < metrics["full_checkpoint_bytes"]
    assert 0 < metrics["trainable_share"] < 0.5
    summary = module_summary(run.out)
    assert summary["method"] == method and summary["bytes"] == metrics["task_module_bytes"]
    assert summary["trainable_params"] == metrics["trainable_params"]


def test_bitfit_module_carries_changed_batchnorm_statistics(image_runs):
    summary = module_summary(image_runs["bitfit"].out)
    assert summary["batchnorm_statistics"] > 0
    assert module_summary(image_runs["lora"].out)["batchnorm_statistics"] == 0


@pytest.mark.parametrize("method", ["lora", "bitfit"])
def test_merge_gives_a_plain_model_with_the_same_outputs(method, image_runs, text_runs, tmp_path):
    from transferlab.models import create_model

    for runs in (image_runs, text_runs):
        run = runs[method]
        data, trained, batch = _val_batch(run.out)
        out = tmp_path / f"merged_{method}_{trained.cfg.modality}"
        report = write_merged(run.out, out)
        assert report["max_abs_logit_diff"] <= 1e-5
        _, _, merged, strategy = load_run(out)  # a plain run directory: strategy full, no extra modules
        assert strategy.spec() == "full"
        base = create_model(json.loads((out / "config.json").read_text())["model"], merged.num_classes,
                            weights=json.loads((out / "config.json").read_text())["weights"])
        assert set(merged.state_dict()) == set(base.state_dict())  # nothing extra at inference
        with torch.no_grad():
            assert (trained(batch) - merged(batch)).abs().max().item() <= 1e-5


def test_adapter_modules_refuse_to_merge(image_runs, tmp_path):
    with pytest.raises(ConfigError, match="cannot be merged"):
        write_merged(image_runs["adapter"].out, tmp_path / "m")


def test_module_refuses_a_base_it_was_not_made_for(image_runs, text_runs, other_tiny_base):
    from transferlab.models import create_model

    other_weights = create_model(TINY_IMAGE_MODEL, 5, weights=str(other_tiny_base))
    with pytest.raises(ConfigError, match="fingerprint"):
        load_task_module(image_runs["lora"].out, model=other_weights)
    with pytest.raises(ConfigError, match="was made for"):
        MultiTaskModel(other_weights).attach("a", image_runs["adapter"].out)
    text_base = load_run(text_runs["lora"].out)[2]
    with pytest.raises(ConfigError, match="was made for"):
        load_task_module(image_runs["bitfit"].out, model=text_base)
    with pytest.raises(ConfigError, match="was made for"):
        load_task_module(text_runs["lora"].out, model=create_model(TINY_IMAGE_MODEL, 2))


def test_tampered_module_is_refused(image_runs, tmp_path):
    import shutil

    copy = tmp_path / "module"
    shutil.copytree(image_runs["adapter"].out / "task_module", copy)
    meta = json.loads((copy / "transferlab_module.json").read_text())
    meta["tensors"]["method"] = meta["tensors"]["method"][1:]
    (copy / "transferlab_module.json").write_text(json.dumps(meta))
    with pytest.raises(UnsafeFileError):
        load_task_module(copy)
    (copy / "transferlab_module.json").write_text("{not json")
    with pytest.raises(UnsafeFileError):
        load_task_module(copy)


def test_two_tasks_on_one_base_switch_back_and_forth(image_runs, image_run_high):
    """Modules trained on digits 0-4 (lora, adapter, bitfit) and 5-9 (lora) share one base."""
    runs = {"low_lora": image_runs["lora"], "low_adapter": image_runs["adapter"], "high_lora": image_run_high,
            "low_bitfit": image_runs["bitfit"]}
    tasks = MultiTaskModel.for_module(runs["low_lora"].out)
    for name, run in runs.items():
        tasks.attach(name, run.out)
    data = {name: load_run(run.out)[1] for name, run in runs.items()}
    expected = {name: run.metrics["val"]["accuracy"] for name, run in runs.items()}
    assert expected["low_lora"] > 0.4 and expected["high_lora"] > 0.4  # well above chance (0.2)
    for name in ["high_lora", "low_lora", "low_bitfit", "high_lora", "low_adapter", "low_lora", "high_lora"]:
        tasks.activate(name)
        assert _accuracy(tasks, data[name]) == pytest.approx(expected[name], abs=1e-12), name
    # the other task's module on this task's data is not the same model
    tasks.activate("high_lora")
    assert _accuracy(tasks, data["low_lora"]) < expected["low_lora"]
    # and the bare base is back once no module is active
    tasks.activate(None)
    from transferlab.models import create_model

    bare = create_model(TINY_IMAGE_MODEL, 5, weights=runs["low_lora"].metrics["config"]["weights"]).eval()
    batch = next(iter(DataLoader(data["low_lora"].val, batch_size=8, collate_fn=data["low_lora"].collate)))
    with torch.no_grad():
        assert torch.equal(tasks.features(batch), bare.features(batch))


def _randomise_lora(model):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def _peft_round_trip(model, plain_backbone, tmp_path, inputs, pool):
    """Save a LoRA module from `model`, load it with peft onto `plain_backbone`; compare LoRA weights and
    features."""
    from peft import PeftModel

    from transferlab.strategies import parse_strategy

    strategy = parse_strategy("lora").parts[0]
    strategy.prepare_model(model)
    _randomise_lora(model)
    facts = strategy.save_task_module(model.eval(), tmp_path)
    peft_model = PeftModel.from_pretrained(plain_backbone, facts["task_module"]).eval()
    ours = {n.removeprefix("backbone.").replace(".default.", "."): p for n, p in model.named_parameters()
            if ".lora_" in n}
    theirs = {n.removeprefix("base_model.model.").replace(".default.", "."): p
              for n, p in peft_model.named_parameters() if ".lora_" in n}
    assert set(ours) == set(theirs) and ours  # every LoRA weight found, none missing, none extra
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        want = model.features(inputs)
        got = pool(peft_model, inputs)
    assert (want - got).abs().max().item() < 1e-5
    return facts


def test_peft_loads_the_minilm_lora_module(tmp_path):
    from transformers import AutoModel

    from transferlab.models import create_model
    from transferlab.models.hf_models import minilm_dir

    model = create_model("minilm_l6", 2)
    inputs = dict(model.tokenizer(["a gripping film", "dull and far too long ."], padding=True,
                                  return_tensors="pt"))

    def pool(peft_model, batch):
        hidden = peft_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1)

    plain = AutoModel.from_pretrained(str(minilm_dir()))  # the backbone as transformers builds it
    facts = _peft_round_trip(model, plain, tmp_path, inputs, pool)
    assert facts["task_module_bytes"] <= 0.05 * facts["full_checkpoint_bytes"]


def test_peft_loads_the_efficientnet_lite0_lora_module(tmp_path):
    import timm

    from transferlab.models import create_model
    from transferlab.models.timm_models import efficientnet_lite0_state_dict

    model = create_model("efficientnet_lite0", 2)
    plain = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    weights = {k: v for k, v in efficientnet_lite0_state_dict().items() if not k.startswith("classifier.")}
    plain.load_state_dict(weights)
    inputs = {"pixel_values": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    _peft_round_trip(model, plain, tmp_path, inputs, lambda m, b: m(b["pixel_values"]))
