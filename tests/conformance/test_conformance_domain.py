"""The domain adaptation strategies (dann, cdan, mcc) and Deep Embedded Validation, on tiny real data.

The pieces against hand computations: the gradient-reversal layer and its schedule, CDAN's multilinear maps and
entropy weights, MCC's class-confusion loss, DEV's control-variate risk, the seeded target batches. Then the
contract through `runs.finetune`, on digits (images; the target another digits subset, or corrupted digits) and
on the small SST-2 text fixture (target: other SST-2 rows): exactly the intended model parameters change and the
discriminator trains; a run interrupted after epoch 1 and resumed equals the uninterrupted run bit for bit
(weights, optimiser state, discriminator, metrics); the saved run loads as the classifier alone. And the
refusals: no --target-data, a target of another modality, an empty target.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conformance.test_conformance import _Watch, interrupted_then_resumed
from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from tests.reliability.conftest import strip_timing
from transferlab.strategies.domain._common import DomainDiscriminator, domain_loss, grl_coefficient, \
    reverse_gradient
from transferlab.strategies.domain.cdan import entropy_weights, multilinear_map, randomized_map
from transferlab.strategies.domain.mcc import class_confusion_loss
from transferlab.training.dev import dev_risk, importance_weights


# ---- the pieces, against hand computations ------------------------------------------------------
def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    weights = torch.tensor([[2.0, -1.0], [4.0, 0.5]])
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)  # identity forward
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -0.3 * weights)  # d/dx sum(w * x) = w, reversed and scaled


def test_grl_schedule_is_ganins():
    for p in (0.0, 0.1, 0.5, 0.99):
        assert grl_coefficient(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
    assert grl_coefficient(0.0) == 0.0 and grl_coefficient(1.0) > 0.999


def test_dann_features_get_the_reversed_discriminator_gradient():
    """Through the GRL the features get -lambda times the gradient the discriminator's loss gives them, and the
    discriminator the plain gradient (a hand-built autograd graph without the GRL is the reference)."""
    torch.manual_seed(0)
    disc = DomainDiscriminator(4, 8)
    fs, ft = torch.randn(3, 4), torch.randn(5, 4)
    coeff = grl_coefficient(0.3)

    f = torch.cat([fs, ft]).requires_grad_(True)
    scores = disc(reverse_gradient(f, coeff))
    domain_loss(scores[:3], scores[3:]).backward()
    reversed_grad, disc_grad = f.grad.clone(), disc[0].weight.grad.clone()

    disc.zero_grad()
    g = torch.cat([fs, ft]).requires_grad_(True)
    s = disc(g)
    # the loss by hand: the mean of -log sigmoid(s) over source rows and of -log(1 - sigmoid(s)) over target rows
    hand = 0.5 * (-torch.log(torch.sigmoid(s[:3])).mean() - torch.log(1 - torch.sigmoid(s[3:])).mean())
    hand.backward()
    assert torch.allclose(reversed_grad, -coeff * g.grad, atol=1e-6)
    assert torch.allclose(disc_grad, disc[0].weight.grad, atol=1e-6)


def test_cdan_maps_and_entropy_weights():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    g = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    full = multilinear_map(f, g)
    assert full.shape == (2, 6)
    for i in range(2):
        assert np.allclose(full[i].numpy(), np.outer(g[i].numpy(), f[i].numpy()).ravel())
    r_f, r_g = torch.randn(3, 16), torch.randn(2, 16)
    rand = randomized_map(f, g, r_f, r_g)
    assert np.allclose(rand.numpy(), (f.numpy() @ r_f.numpy()) * (g.numpy() @ r_g.numpy()) / 4.0, atol=1e-6)
    h = -(g.numpy() * np.log(g.numpy())).sum(1)
    assert np.allclose(entropy_weights(g).numpy(), 1 + np.exp(-h), atol=1e-6)


def test_cdan_uses_the_randomised_map_beyond_4096():
    from types import SimpleNamespace

    from transferlab.strategies.domain.cdan import CDAN

    small = CDAN().build(SimpleNamespace(feature_dim=64, num_classes=10))  # 640: the full map
    large = CDAN().build(SimpleNamespace(feature_dim=1280, num_classes=10))  # 12,800: randomised, 1024 wide
    assert small["discriminator"][0].in_features == 640 and not hasattr(small, "r_f")
    assert large["discriminator"][0].in_features == 1024 and tuple(large.r_f.shape) == (1280, 1024)
    assert not large.r_f.requires_grad  # fixed: a buffer, checkpointed, never trained


def test_mcc_loss_matches_numpy():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    t = 2.5
    y = np.exp(logits / t)
    y /= y.sum(1, keepdims=True)
    h = -(y * np.log(y)).sum(1)
    w = 1 + np.exp(-h)
    w = len(y) * w / w.sum()
    c = (y * w[:, None]).T @ y
    c = c / c.sum(0, keepdims=True)  # each column over its sum
    expected = (c.sum() - np.trace(c)) / 3
    assert class_confusion_loss(torch.tensor(logits), t).item() == pytest.approx(expected, rel=1e-6)
    # confident, distinct predictions confuse little; uniform ones a lot
    assert class_confusion_loss(torch.eye(3) * 50, 1.0) < 1e-6
    assert class_confusion_loss(torch.zeros(4, 3), 1.0).item() == pytest.approx(2 / 3)


def test_dev_risk_matches_numpy():
    rng = np.random.default_rng(3)
    w = rng.gamma(2.0, 0.5, size=50)
    loss = rng.exponential(0.7, size=50)
    wl = w * loss
    cov = ((wl - wl.mean()) * (w - w.mean())).sum() / (len(w) - 1)
    var = ((w - w.mean()) ** 2).sum() / (len(w) - 1)
    eta = -cov / var
    out = dev_risk(w, loss)
    assert out["eta"] == pytest.approx(eta)
    assert out["risk"] == pytest.approx(wl.mean() + eta * w.mean() - eta)
    assert out["mean_weight"] == pytest.approx(w.mean())
    # with equal weights the control variate has nothing to correct: the risk is the mean loss
    assert dev_risk(np.ones(5), np.arange(5.0))["risk"] == pytest.approx(2.0)


def test_importance_weights_favour_target_like_examples():
    rng = np.random.default_rng(0)
    source, target = rng.normal(0, 1, (200, 2)), rng.normal(2, 1, (100, 2))
    val = np.array([[-2.0, -2.0], [2.0, 2.0]])
    w, facts = importance_weights(source, target, val, seed=0)
    assert w[1] > 1 > w[0] > 0 and facts["domain_accuracy"] > 0.8
    assert facts["n_source"] + facts["n_target"] == 240  # the fitted four fifths


def test_target_batches_are_a_function_of_the_step():
    from transferlab.data import DataOptions, load_data
    from transferlab.models import model_cfg
    from transferlab.training.target import TargetData, TargetStream

    bundle = load_data("digits:2-3", model_cfg(TINY_IMAGE_MODEL), DataOptions(image_size=16, max_train=20))
    target = TargetData(bundle.train, bundle.collate)
    n = len(bundle.train)
    stream = TargetStream(target, 8, seed=5)
    walked = [stream.batch(s)["pixel_values"] for s in range(2 * stream.per_pass + 1)]
    assert all("labels" not in stream.batch(s) for s in range(2))
    for s in (0, 3, stream.per_pass, 2 * stream.per_pass):  # opened fresh at a step: the same batch
        assert torch.equal(TargetStream(target, 8, seed=5).batch(s)["pixel_values"], walked[s])
    assert stream.per_pass == n // 8 and walked[0].shape[0] == 8
    assert not torch.equal(walked[0], walked[stream.per_pass])  # each pass a new order
    assert not torch.equal(TargetStream(target, 8, seed=6).batch(0)["pixel_values"], walked[0])
    halves = [TargetStream(target, 8, seed=5, rank=r, size=2).batch(1)["pixel_values"] for r in (0, 1)]
    assert torch.equal(torch.cat([halves[0], halves[1]]).sort(0)[0], walked[1].sort(0)[0])


# ---- the contract, through runs.finetune ---------------------------------------------------------
@pytest.fixture(scope="module")
def corrupted_digits(tmp_path_factory):
    """Digits 0 and 1 as PNG files in class folders, inverted and with Gaussian noise: a shifted domain."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("corrupted_digits")
    digits = load_digits()
    rng = np.random.default_rng(0)
    for label in (0, 1):
        (root / str(label)).mkdir()
        for i, image in enumerate(digits.images[digits.target == label][:20]):
            pixels = 255 - image * 255 / 16 + rng.normal(0, 40, image.shape)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((32, 32)).save(
                root / str(label) / f"{i}.png")
    return root


def _image_config(strategy, target, **train):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    settings = dict(epochs=2, lr=1e-2, batch_size=8, eval_batch_size=16, weight_decay=0.0, warmup=0.0,
                    device="cpu")
    settings.update(train)
    return RunConfig(model=TINY_IMAGE_MODEL, data="digits:0-1", strategy=strategy, train=TrainConfig(**settings),
                     data_options=DataOptions(max_train=32, max_val=8, image_size=32),
                     strategy_options={"target_data": str(target)})


def _text_config(strategy, tiny_bert_dir, small_text_data, target):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    return RunConfig(model=str(tiny_bert_dir), data=str(small_text_data), strategy=strategy,
                     train=TrainConfig(epochs=2, lr=1e-2, batch_size=4, eval_batch_size=8, weight_decay=0.0,
                                       warmup=0.0, device="cpu"),
                     data_options=DataOptions(max_train=8, max_val=4, max_length=16),
                     strategy_options={"target_data": str(target)})


@pytest.fixture(scope="module")
def text_target(small_text_data, tmp_path_factory):
    """Other SST-2 rows (the fixture's dev file) as a target folder's train.tsv."""
    out = tmp_path_factory.mktemp("sst2_target")
    (out / "train.tsv").write_text((small_text_data / "dev.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    return out


def _check_contract(config, tmp_path, own: str | None):
    """Train, check which tensors changed, interrupt and resume, reload; returns the metrics."""
    from transferlab.runs import finetune, load_run_model
    from transferlab.training.checkpoint import load_checkpoint
    from transferlab.training.trainer import Callback

    watch = _Watch()
    start = {}

    class Own(Callback):
        def on_fit_start(self, trainer):
            start.update({k: v.clone() for k, v in trainer.strategy.state_dict().items()})

    metrics = finetune(config, tmp_path / "a", callbacks=[watch.callback, Own()])
    assert metrics["epochs_run"] == 2

    model_a, opt_a, _, strategy_a, _ = load_checkpoint(tmp_path / "a" / "checkpoint" / "last.safetensors")
    trainable = set(watch.names) if watch.trainable is None else watch.trainable
    changed = {n for n in watch.names if not torch.equal(watch.before[n], model_a[n])}
    assert changed <= trainable, sorted(changed - trainable)[:5]
    assert watch.reached <= changed and changed, sorted(watch.reached - changed)[:5]
    if own is not None:  # the discriminator trained, and lives in the strategy's state, not the model's
        weights = [k for k in start if k.startswith(f"{own}.discriminator.") and k.endswith("weight")]
        assert weights and all(not torch.equal(start[k], strategy_a[k]) for k in weights)
        assert not any("discriminator" in k for k in model_a)
    else:
        assert not strategy_a
    dev = metrics["dev"]
    assert math.isfinite(dev["risk"]) and dev["n_val"] == metrics["val"]["n"] and dev["mean_weight"] > 0

    interrupted_then_resumed(config, tmp_path / "b")
    model_b, opt_b, _, strategy_b, _ = load_checkpoint(tmp_path / "b" / "checkpoint" / "last.safetensors")
    for a, b, what in ((model_a, model_b, "weights"), (strategy_a, strategy_b, "discriminator")):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"resumed {what} differ"
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for index, entry in opt_a["state"].items():
        assert all(torch.equal(v, opt_b["state"][index][k]) if torch.is_tensor(v) else v == opt_b["state"][index][k]
                   for k, v in entry.items()), "resumed optimiser state differs"
    metrics_a = strip_timing(json.loads((tmp_path / "a" / "metrics.json").read_text()))
    metrics_b = strip_timing(json.loads((tmp_path / "b" / "metrics.json").read_text()))
    assert metrics_a["val"] == metrics_b["val"] and metrics_a["dev"] == metrics_b["dev"]
    history = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in resumed]

    _, loaded, _ = load_run_model(tmp_path / "a")  # the classifier alone
    assert not any("discriminator" in k for k in loaded.state_dict())
    with torch.no_grad():
        assert torch.allclose(loaded(watch.batch), watch.outputs, atol=1e-6)
    return metrics


@pytest.mark.parametrize("strategy, own", [("dann", "dann"), ("cdan", "cdan"), ("mcc", None),
                                           ("lp_ft:lp_epochs=1+dann", "dann"), ("discriminative+mcc", None)])
def test_image_contract(strategy, own, tmp_path):
    metrics = _check_contract(_image_config(strategy, "digits:2-3"), tmp_path, own)
    assert metrics["strategy"].split("+")[-1] == strategy.split("+")[-1]  # `dann` alone runs as full+dann


def test_backbone_moves_with_dann_on_corrupted_digits(corrupted_digits, tmp_path):
    """dann alone (full fine-tuning) trains the backbone, and its loss term is logged each epoch."""
    metrics = _check_contract(_image_config("dann:weight=0.5", corrupted_digits), tmp_path, "dann")
    history = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert all(r["dann"] > 0 for r in history)
    assert metrics["trainable_share"] == 1.0


def test_the_adversary_changes_the_backbone_update(tmp_path):
    """The same run without the adversary (weight 0) ends with other backbone weights: its gradient arrives."""
    from transferlab.runs import finetune
    from transferlab.training.checkpoint import load_checkpoint

    finetune(_image_config("dann", "digits:2-3", epochs=1), tmp_path / "on")
    finetune(_image_config("dann:weight=0.0", "digits:2-3", epochs=1), tmp_path / "off")
    on = load_checkpoint(tmp_path / "on" / "checkpoint" / "last.safetensors")[0]
    off = load_checkpoint(tmp_path / "off" / "checkpoint" / "last.safetensors")[0]
    backbone = [k for k in on if k.startswith("backbone.") and k.endswith("weight")]
    assert any(not torch.equal(on[k], off[k]) for k in backbone)


@pytest.mark.parametrize("strategy, own", [("dann", "dann"), ("mcc", None)])
def test_text_contract(strategy, own, tiny_bert_dir, small_text_data, text_target, tmp_path):
    _check_contract(_text_config(strategy, tiny_bert_dir, small_text_data, text_target), tmp_path, own)


# ---- the command line: the option, its record, its refusals ---------------------------------------
def _finetune_args(out, *extra):
    return ["finetune", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-1", "--image-size", "32",
            "--max-train", "16", "--max-val", "8", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--out", str(out), *extra]


def test_cli_records_the_target_and_reports_dev(tmp_path, capsys):
    code, out, err = run_cli(_finetune_args(tmp_path / "run", "--strategy", "mcc", "--target-data", "digits:2-3"),
                             capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["strategy_options"]["target_data"] == "digits:2-3"
    assert "risk" in json.loads((tmp_path / "run" / "metrics.json").read_text())["dev"]
    # any strategy given target data reports DEV, so runs with and without adaptation can be compared
    code, _, err = run_cli(_finetune_args(tmp_path / "plain", "--target-data", "digits:2-3"), capsys)
    assert code == 0, err
    assert "risk" in json.loads((tmp_path / "plain" / "metrics.json").read_text())["dev"]


@pytest.mark.parametrize("strategy", ["dann", "cdan", "mcc", "linear_probe+dann"])
def test_cli_refuses_without_target_data(strategy, tmp_path, capsys):
    code, _, err = run_cli(_finetune_args(tmp_path / "run", "--strategy", strategy), capsys)
    assert code == 2 and "--target-data" in error_line(err)
    assert not (tmp_path / "run").exists()


def test_cli_refuses_another_modality_and_an_empty_target(small_text_data, tmp_path, capsys):
    code, _, err = run_cli(_finetune_args(tmp_path / "run", "--strategy", "dann", "--target-data",
                                          str(small_text_data)), capsys)
    assert code == 2 and "--target-data" in error_line(err) and "text" in error_line(err)
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty"
    for label in ("a", "b"):
        (empty / label).mkdir(parents=True)
    code, _, err = run_cli(_finetune_args(tmp_path / "run", "--strategy", "dann", "--target-data", str(empty)),
                           capsys)
    assert code == 2 and "--target-data" in error_line(err)
    assert not (tmp_path / "run").exists()
