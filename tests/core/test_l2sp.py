"""L2-SP: the penalty against a reference computation; the closed form against gradient descent."""
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.core.conftest import build
from transferlab.strategies import StrategyContext
from transferlab.strategies.l2sp import l2sp_linear_closed_form


def test_penalty_matches_reference_computation():
    _, _, net, strategy = build(TINY_IMAGE_MODEL, "digits", "l2sp:alpha=0.3,beta=0.05", max_train=50)
    l2sp = strategy.part("l2sp")
    l2sp.on_fit_start(net, StrategyContext(total_epochs=1))
    w0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    terms = l2sp.loss_terms(net, {}, torch.zeros(1))
    pull = sum(((p - w0[n]) ** 2).sum() for n, p in net.named_parameters() if not n.startswith("head."))
    new = sum((p ** 2).sum() for n, p in net.named_parameters() if n.startswith("head."))
    assert torch.allclose(terms["l2sp_pull"], 0.5 * 0.3 * pull, rtol=1e-5)
    assert torch.allclose(terms["l2sp_new"], 0.5 * 0.05 * new, rtol=1e-5)


def test_closed_form_matches_gradient_descent():
    torch.manual_seed(0)
    n, d, lam = 50, 4, 0.3
    X = torch.randn(n, d, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + 0.1 * torch.randn(n, dtype=torch.float64)
    theta0 = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    closed = l2sp_linear_closed_form(X, y, theta0, lam)
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=0.1)
    for _ in range(3000):
        opt.zero_grad()
        loss = ((y - X @ theta) ** 2).sum() / (2 * n) + lam * ((theta - theta0) ** 2).sum()
        loss.backward()
        opt.step()
    assert torch.allclose(theta.detach(), closed, atol=1e-8)
    # and the pull is real: the solution sits between least squares and theta0
    ls = torch.linalg.lstsq(X, y).solution
    assert (closed - theta0).norm() < (ls - theta0).norm()
