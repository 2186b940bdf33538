"""L2-SP: the penalty against a reference computation; the closed form against gradient descent."""
import torch

from tests.conftest import TINY_IMAGE_MODEL
from tests.core.conftest import build
from transferlab.strategies import StrategyContext


def l2sp_linear_closed_form(X: torch.Tensor, y: torch.Tensor, theta0: torch.Tensor, lam: float) -> torch.Tensor:
    """Minimiser of 1/(2n) ||y - X theta||^2 + lam * ||theta - theta0||^2.

    Setting the gradient -X^T (y - X theta) / n + 2 lam (theta - theta0) to zero gives
    theta = (X^T X + 2 n lam I)^-1 (X^T y + 2 n lam theta0).  X: (n, d), y: (n,), theta0: (d,).
    """
    n, d = X.shape
    A = X.T @ X + 2 * n * lam * torch.eye(d, dtype=X.dtype)
    b = X.T @ y + 2 * n * lam * theta0
    return torch.linalg.solve(A, b)


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


def test_a_linear_head_trained_with_l2sp_through_the_trainer_ends_at_the_closed_form(tmp_path):
    """The product's path, not a helper: Trainer + l2sp (SGD, no weight decay, constant schedule, full batch) on
    a linear model y = X theta whose pre-trained theta0 is the reference. The objective is 1/(2n)||y - X theta||^2
    + alpha/2 ||theta - theta0||^2, whose minimiser is the closed form with lam = alpha/2."""
    from torch import nn
    from torch.utils.data import TensorDataset

    from transferlab.data import DataBundle
    from transferlab.data._errors import SkipLog
    from transferlab.models._config import PretrainedCfg
    from transferlab.models.transfer_model import TransferModel
    from transferlab.strategies import parse_strategy
    from transferlab.training.checkpoint import load_checkpoint
    from transferlab.training.config import TrainConfig
    from transferlab.training.objectives import SquaredError
    from transferlab.training.trainer import Trainer

    torch.manual_seed(0)
    n, d, alpha = 64, 4, 0.6
    X = torch.randn(n, d)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n)
    theta0 = torch.tensor([0.5, 0.5, 0.5, 0.5])
    cfg = PretrainedCfg(name="linear", modality="image", architecture="linear")
    model = TransferModel(cfg, nn.Identity(), d, 1, [])  # the registry's linear head, (B, d) -> (B, 1)
    model.head.register_parameter("bias", None)  # y = X theta: no intercept in the closed form
    with torch.no_grad():
        model.head.weight.copy_(theta0[None])
    model.new_prefixes = set()  # theta is the pre-trained weight here: L2-SP pulls it to theta0
    data = DataBundle(kind="image", classes=["y"], train=TensorDataset(X, y), val=TensorDataset(X, y), test=None,
                      collate=lambda items: {"pixel_values": torch.stack([x for x, _ in items]),
                                             "labels": torch.stack([t for _, t in items])},
                      skipped=SkipLog(), source="synthetic")
    config = TrainConfig(epochs=100, lr=0.3, batch_size=n, optimizer="sgd", weight_decay=0.5, schedule="constant",
                         warmup=0.0, grad_clip=0.0)
    strategy = parse_strategy(f"l2sp:alpha={alpha},beta=0")
    # weight_decay=0.5 would pull theta to 0 as well; anchored parameters must get none of it
    Trainer(model, strategy, data, config, tmp_path, objective=SquaredError()).fit()
    state = load_checkpoint(tmp_path / "checkpoint" / "last.safetensors")[0]
    closed = l2sp_linear_closed_form(X.double(), y.double(), theta0.double(), alpha / 2)
    assert torch.allclose(state["head.weight"][0].double(), closed, atol=1e-4), (state["head.weight"], closed)
