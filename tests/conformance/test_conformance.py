"""The contract, checked over every registered model kind and every registered strategy (scikit-learn's
`check_estimator` is the model): a strategy joins by registering, a model kind by an entry in MODELS.

For each (model, strategy), at tiny sizes on real data (digits, SST-2 rows), through the product's own path
(`runs.finetune`):
- training runs (forward and backward) and exactly the parameters the strategy names change: every changed
  parameter is in the strategy's trainable set, and every trainable parameter the loss reached changed;
- BatchNorm running statistics of layers whose parameters never train stay as they were;
- a run interrupted after its first epoch and resumed ends with the same checkpoint and metrics;
- the saved run loads (`load_run_model`) and gives the trained model's outputs.
A strategy that does not apply to a model (EWC and LwF need a source classifier) must refuse it with one
clear ConfigError before training.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.reliability.conftest import strip_timing
from transferlab.errors import ConfigError
from transferlab.nn_utils import is_batchnorm
from transferlab.strategies import list_strategies

# Strategy specs for 2-epoch runs (lp_ft must have an epoch after its probe).
SPECS = {"lp_ft": "lp_ft:lp_epochs=1", "freeze": "freeze:k=1", "gradual_unfreeze": "gradual_unfreeze:every=1"}
# peft:<type> (one registered strategy, `peft`): each layer method peft applies here, through its own config class.
PEFT_SPECS = ["peft:boft", "peft:hra", "peft:ia3", "peft:loha", "peft:lokr", "peft:lora:use_dora=true", "peft:oft"]
STRATEGIES = sorted(s for c in list_strategies() for s in (PEFT_SPECS if c.name == "peft" else [SPECS.get(c.name, c.name)]))
NEEDS_SOURCE_HEAD = {"ewc", "lwf"}
# learn from unlabelled target data: refused without --target-data (their contract: test_conformance_domain.py)
NEEDS_TARGET_DATA = {"dann", "cdan", "mcc"}
# (strategy, kind) pairs refused in one line, and a word of the reason: peft's DoRA fails on Conv2d in training;
# peft 0.21's OFT/BOFT/HRA Conv2d layers fail in a training step here (a .view on a channels-last weight, OFT's
# 3x3 unfold on resnet18's 2x2 maps at 32 px), found by the peft strategy's probe before the run folder.
REFUSED = {("peft:lora:use_dora=true", k): "DoRA" for k in ("efficientnet_lite0", "timm resnet18", "timm convnext_atto")}
REFUSED.update({(s, "timm resnet18"): "Conv2d" for s in ("peft:oft", "peft:boft", "peft:hra")})
REFUSED[("peft:boft", "timm convnext_atto")] = "Conv2d"
# peft: methods on the registry's real models (minilm_l6, efficientnet_lite0) and the BERT folder: make test-all
SLOW_KINDS = {"efficientnet_lite0", "minilm_l6", "HF BERT folder"}
# ... and one refusal whose probe (a BOFT training step on resnet18) alone takes about a minute on 2 cores
SLOW_CASES = {("peft:boft", "timm resnet18")}

# model kind -> (model, data kind, timm architecture whose random weights (with a classifier) are saved first)
MODELS = {
    "efficientnet_lite0": ("efficientnet_lite0", "image", None),
    "minilm_l6": ("minilm_l6", "text", None),
    "timm resnet18": ("resnet18", "image", "resnet18"),
    "timm ViT": ("test_vit", "image", "test_vit"),
    "timm convnext_atto": ("convnext_atto", "image", "convnext_atto"),
    "HF BERT folder": ("bert_dir", "text", None),
}


class _Interrupt(BaseException):
    """Stands for a kill after the first epoch's checkpoint (the reliability suite does real SIGKILLs)."""


def interrupted_then_resumed(config, folder) -> None:
    """Train `config` into `folder`, stopped after epoch 1 as a kill would stop it, then `--resume` it."""
    from transferlab.runs import finetune
    from transferlab.training.trainer import Callback

    class Stop(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 1:
                raise _Interrupt

    with pytest.raises(_Interrupt):
        finetune(config, folder, callbacks=[Stop()])
    finetune(config, folder, resume=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random timm weights with a 10-class classifier, saved once: the run's pre-trained start and source head."""
    import timm
    from safetensors.torch import save_file

    out, root = {}, tmp_path_factory.mktemp("weights")
    for _, _, arch in MODELS.values():
        if arch:
            torch.manual_seed(0)
            net = timm.create_model(arch, pretrained=False, num_classes=10)
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / f"{arch}.safetensors"))
            out[arch] = str(root / f"{arch}.safetensors")
    return out


def _config(kind: str, strategy: str, weights, tiny_bert_dir, small_text_data):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    model, modality, arch = MODELS[kind]
    model = str(tiny_bert_dir) if model == "bert_dir" else model
    data = "digits:0-1" if modality == "image" else str(small_text_data)
    size = 64 if model == "test_vit" else 32  # timm's test ViT needs at least its 16-px patch grid of 4x4
    return RunConfig(model=model, data=data, strategy=strategy, weights=weights.get(arch) if arch else None,
                     train=TrainConfig(epochs=2, lr=1e-2, batch_size=4, eval_batch_size=8, weight_decay=0.0,
                                       warmup=0.0, device="cpu"),
                     data_options=DataOptions(max_train=8, max_val=4, image_size=size if modality == "image" else None,
                                              max_length=16))


class _Watch:
    """Callback: the state before training, which parameters got a non-zero gradient, the trained outputs."""

    def __init__(self):
        from transferlab.training.trainer import Callback

        watch = self

        class _Cb(Callback):
            def on_fit_start(self, trainer):
                watch.before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
                watch.trainable = trainer.strategy.ever_trainable(trainer.model, trainer.config.epochs)
                watch.names = [n for n, _ in trainer.model.named_parameters()]
                watch.reached = set()
                watch.batch = next(iter(trainer.eval_loader(trainer.data.val)))

            def on_epoch_end(self, trainer, record):
                watch.reached |= {n for n, p in trainer.model.named_parameters()
                                  if p.grad is not None and bool(p.grad.abs().sum() > 0)}

            def on_fit_end(self, trainer, metrics):
                trainer.model.eval()
                with torch.no_grad():
                    watch.outputs = trainer.model(watch.batch)
                watch.model = trainer.model

        self.callback = _Cb()


def _cases():
    for kind in MODELS:
        for strategy in STRATEGIES:
            slow = (strategy.startswith("peft:") and kind in SLOW_KINDS) or (strategy, kind) in SLOW_CASES
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(kind, strategy, marks=marks, id=f"{strategy}-{kind}")


@pytest.mark.parametrize("kind, strategy", list(_cases()))
def test_model_strategy_contract(kind, strategy, weights, tiny_bert_dir, small_text_data, tmp_path):
    from transferlab.runs import finetune, load_run_model
    from transferlab.training.checkpoint import load_checkpoint

    config = _config(kind, strategy, weights, tiny_bert_dir, small_text_data)
    watch = _Watch()
    base = strategy.split(":")[0]
    try:
        metrics = finetune(config, tmp_path / "a", callbacks=[watch.callback])
    except ConfigError as exc:
        if (strategy, kind) in REFUSED:
            assert REFUSED[strategy, kind] in str(exc) and "\n" not in str(exc), exc
            return
        if base in NEEDS_TARGET_DATA:
            assert "--target-data" in str(exc) and "\n" not in str(exc), exc
            assert not (tmp_path / "a").exists()
            return
        assert base in NEEDS_SOURCE_HEAD and "source classifier" in str(exc), exc
        assert "\n" not in str(exc) and not (tmp_path / "a" / "checkpoint" / "last.safetensors").exists()
        return
    assert metrics["epochs_run"] == 2

    # exactly the intended parameters changed, by the last epoch's weights (the run keeps the best epoch's)
    last = load_checkpoint(tmp_path / "a" / "checkpoint" / "last.safetensors")[0]
    trainable = set(watch.names) if watch.trainable is None else watch.trainable
    changed = {n for n in watch.names if not torch.equal(watch.before[n], last[n])}
    assert changed <= trainable, f"changed but not trainable: {sorted(changed - trainable)[:5]}"
    assert watch.reached <= trainable, f"got gradients but not trainable: {sorted(watch.reached - trainable)[:5]}"
    assert watch.reached <= changed, f"trainable, reached, unchanged: {sorted(watch.reached - changed)[:5]}"
    assert changed, "nothing trained"

    # BatchNorm statistics of layers that never train are the pre-trained ones
    if config.train.bn_stats == "auto":
        for name, module in watch.model.named_modules():
            if is_batchnorm(module) and not any(f"{name}.{p}" in trainable for p, _ in module.named_parameters()):
                for buf in ("running_mean", "running_var"):
                    key = f"{name}.{buf}"
                    assert torch.equal(watch.before[key], last[key]), f"{key} moved though frozen"

    # interrupted after epoch 1, resumed: the same run
    interrupted_then_resumed(config, tmp_path / "b")
    last_a = load_checkpoint(tmp_path / "a" / "checkpoint" / "last.safetensors")
    last_b = load_checkpoint(tmp_path / "b" / "checkpoint" / "last.safetensors")
    assert last_a[0].keys() == last_b[0].keys()
    assert all(torch.equal(last_a[0][k], last_b[0][k]) for k in last_a[0]), "resumed weights differ"
    metrics_a = strip_timing(json.loads((tmp_path / "a" / "metrics.json").read_text()))
    metrics_b = strip_timing(json.loads((tmp_path / "b" / "metrics.json").read_text()))
    assert metrics_a["val"] == metrics_b["val"] and metrics_a["best_epoch"] == metrics_b["best_epoch"]

    # the saved run loads and gives the trained outputs
    _, loaded, _ = load_run_model(tmp_path / "a")
    with torch.no_grad():
        assert torch.allclose(loaded(watch.batch), watch.outputs, atol=1e-6)
