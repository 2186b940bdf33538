"""The information-bottleneck head (`--head vib`) and the selective penalty on latent dimensions (`ib_select`):
the KL term against torch.distributions, prediction from the mean, the annealing schedule, save/load/resume
through the CLI, the relevance estimator against a hand computation, and no penalty on relevant dimensions."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli
from transferlab.models.heads import VIBHead, build_head, gaussian_kl
from transferlab.strategies.ib_select import (IBSelect, correlation_ratio, relevance_from_eta2,
                                              selective_penalty)


# ---- the VIB head --------------------------------------------------------------------------------------
def test_gaussian_kl_matches_torch_distributions():
    from torch.distributions import Independent, Normal, kl_divergence

    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(5, 7, generator=g), torch.randn(7, generator=g)
    std_q, std_p = torch.rand(5, 7, generator=g) + 0.1, torch.rand(7, generator=g) + 0.1
    expected = kl_divergence(Independent(Normal(mu_q, std_q), 1), Independent(Normal(mu_p, std_p), 1))
    assert torch.allclose(gaussian_kl(mu_q, std_q, mu_p, std_p), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(mu_q, std_q, mu_q, std_q), torch.zeros(5), atol=1e-6)  # KL(q||q) = 0


def test_vib_head_loss_term_is_the_annealed_kl_of_its_posterior():
    torch.manual_seed(0)
    head = build_head("vib:dim=6,beta=0.01", 10, 3)
    assert isinstance(head, VIBHead) and head.spec() == "vib:dim=6,beta=0.01"
    x = torch.randn(4, 10)
    head.train()
    head.on_epoch_start(2, 5)  # the third epoch: weight min(1, 3 * 0.01)
    head(x)
    terms = head.loss_terms()
    mu, std = head.posterior(x)
    expected = 0.03 * gaussian_kl(mu, std, *head.prior()).mean()
    assert torch.allclose(terms["vib_kl"], expected)
    assert head.loss_terms() == {}  # read once per step
    assert build_head("vib:beta=0.5", 10, 3).kl_weight() == 0.5  # epoch 1: min(1, 1 * 0.5)
    constant = build_head("vib:beta=0.5,annealing=none", 10, 3)
    constant.on_epoch_start(9, 10)
    assert constant.kl_weight() == 0.5


def test_vib_head_samples_in_training_and_predicts_from_the_mean():
    torch.manual_seed(0)
    head = build_head("vib:dim=4", 8, 2)
    x = torch.randn(3, 8)
    head.train()
    assert not torch.allclose(head(x), head(x))  # z = mu + std * eps
    head.eval()
    mu, _ = head.posterior(x)
    assert torch.allclose(head(x), head.classifier(mu)) and torch.equal(head(x), head(x))
    assert head.loss_terms() == {}  # no KL term outside training


def test_vib_head_fixed_prior_does_not_train():
    head = build_head("vib:dim=4,learnable_prior=false", 8, 2)
    assert not head.prior_mu.requires_grad and not head.prior_std_raw.requires_grad
    mu_p, std_p = head.prior()
    assert torch.allclose(mu_p, torch.zeros(4)) and torch.allclose(std_p, torch.ones(4))  # N(0, I)


@pytest.mark.parametrize("spec,match", [("vib:dim=0", "dim must be at least 1"), ("vib:beta=-1", "beta must be"),
                                        ("vib:annealing=cosine", "annealing must be linear or none")])
def test_bad_vib_options_are_one_line_and_exit_2(spec, match, capsys):
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-2", "--image-size", "32",
                            "--head", spec, "--out", "unused"], capsys)
    assert code == 2 and match in error_line(err)


def _vib_config(epochs: int = 3):
    from transferlab.data import DataOptions
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    return RunConfig(model=TINY_IMAGE_MODEL, data="digits:0-2", strategy="full", head="vib:dim=8,beta=0.01",
                     train=TrainConfig(epochs=epochs, batch_size=16, device="cpu"),
                     data_options=DataOptions(max_train=60, image_size=32))


def test_vib_head_run_resumes_exactly_saves_and_loads(tmp_path):
    """Killed after epoch 2 of 3 and resumed: the same weights (prior included), the same KL per epoch (the
    annealed weight comes from the epoch), and the saved run predicts with the mean, as the trained head did."""
    from tests.core.test_trainer import StopAfter
    from transferlab.runs import finetune, load_run_model
    from transferlab.training.checkpoint import load_checkpoint
    from transferlab.training.trainer import LAST

    whole = finetune(_vib_config(), tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        finetune(_vib_config(), tmp_path / "cut", callbacks=[StopAfter(2)])
    resumed = finetune(_vib_config(), tmp_path / "cut", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "checkpoint" / LAST)[0]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint" / LAST)[0]
    assert {"head.prior_mu", "head.prior_std_raw", "head.to_mu.weight", "head.classifier.weight"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.prior_mu"], torch.zeros(8))  # the learnable prior trained
    assert whole["val"] == resumed["val"]
    kl = {run: [json.loads(x)["vib_kl"] for x in (tmp_path / run / "history.jsonl").read_text().splitlines()]
          for run in ("whole", "cut")}
    assert kl["whole"] == kl["cut"] and all(v > 0 for v in kl["whole"])
    _, model, _ = load_run_model(tmp_path / "whole")
    assert isinstance(model.head, VIBHead) and model.head.spec() == "vib:dim=8,beta=0.01"
    model.eval()
    x = torch.randn(2, model.feature_dim)
    assert torch.equal(model.head(x), model.head.classifier(model.head.posterior(x)[0]))


# ---- ib_select -------------------------------------------------------------------------------------------
def test_correlation_ratio_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    z = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eta2, variance = correlation_ratio(z, labels, num_classes=4)  # class 3 absent
    for d in range(3):
        col = z[:, d]
        between = sum((labels == c).sum() * (col[labels == c].mean() - col.mean()) ** 2 for c in range(3))
        total = ((col - col.mean()) ** 2).sum()
        assert torch.isclose(eta2[d], between / total)
        assert torch.isclose(variance[d], col.var(unbiased=False))


def test_relevance_is_one_for_the_label_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=g)
    z = torch.stack([labels.double(), torch.randn(400, generator=g, dtype=torch.float64),
                     torch.full((400,), 3.0, dtype=torch.float64)], 1)  # label, noise, constant
    r = relevance_from_eta2(correlation_ratio(z, labels, 2)[0])
    assert r[0] == 1.0 and r[1] < 0.05 and r[2] == 0.0


def test_relevant_dimensions_receive_no_penalty():
    z0 = torch.zeros(4, 3)
    z = torch.ones(4, 3, requires_grad=True)
    relevance, variance = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([1.0, 1.0, 4.0])
    penalty = selective_penalty(z, z0, relevance, variance)
    penalty.backward()
    # mean over 4 x 3 entries of (1 - r_d) / s_d^2: (0 + 0.5 + 0.25) * 4 / 12
    assert torch.isclose(penalty, torch.tensor(0.25))
    assert torch.all(z.grad[:, 0] == 0) and torch.all(z.grad[:, 1] > 0) and torch.all(z.grad[:, 2] > 0)


def _ib_run(tmp_path, capsys, spec: str, epochs: int = 1, extra=()):
    out = tmp_path / spec.replace(":", "_").replace("=", "").replace(",", "_")
    code, _, err = run_cli(["finetune", "--model", TINY_IMAGE_MODEL, "--data", "digits:0-2", "--image-size", "32",
                    "--max-train", "60", "--batch-size", "16", "--epochs", str(epochs), "--strategy", spec,
                    "--out", str(out), *extra], capsys)
    return code, out, err


def test_ib_select_holds_irrelevant_dimensions_closer_than_full(tmp_path, capsys):
    """The same run with and without the penalty: with the penalty, the pooled features of the training inputs
    stay closer to the pre-trained ones on the dimensions it weighs, measured as the strategy weighs them: both
    models with BatchNorm on batch statistics (the mode the penalty is computed in; running statistics move with
    the data whatever the weights do, and no loss term can hold them)."""
    from transferlab.diagnostics._common import make_loader, reference_model
    from transferlab.runs import load_run

    weighted_drift = {}
    for spec in ("full", "ib_select:lam=10"):
        code, out, _ = _ib_run(tmp_path, capsys, spec, epochs=2, extra=["--lr", "3e-3"])
        assert code in (0, None)
        config, bundle, model, strategy = load_run(out)
        reference = reference_model(config)
        loader = make_loader(bundle, bundle.train, 64)  # one batch of the 60 training examples
        model.train()
        reference.train()
        with torch.no_grad():
            z = torch.cat([model.features(b) for b in loader])
            z0 = torch.cat([reference.features(b) for b in loader])
            labels = torch.cat([b["labels"] for b in loader])
        eta2, variance = correlation_ratio(z0, labels, 3)
        relevance = relevance_from_eta2(eta2).float()
        weighted_drift[spec] = float(selective_penalty(z, z0, relevance, variance.float().clamp(min=1e-12)))
        if spec != "full":
            history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
            assert all(r["ib_select"] > 0 for r in history)
    assert weighted_drift["ib_select:lam=10"] < 0.5 * weighted_drift["full"]


def test_ib_select_bad_layer_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = _ib_run(tmp_path, capsys, "ib_select:layer=99")
    assert code == 2 and "layer=99 is not a backbone depth group" in error_line(err)


def test_ib_select_on_a_depth_group_penalises_that_groups_output(tmp_path, capsys):
    code, out, _ = _ib_run(tmp_path, capsys, "ib_select:layer=1")
    assert code in (0, None)
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert history[0]["ib_select"] > 0
