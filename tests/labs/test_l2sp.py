"""The l2sp lab's closed form, against a direct solve and the objective's gradient; the digits folder's splits."""
import torch

from transferlab.labs._digits_folder import split_rows
from transferlab.labs.l2sp import l2sp_closed_form


def test_closed_form_is_the_minimiser_of_the_l2sp_objective():
    torch.manual_seed(0)
    n, d, alpha = 30, 50, 0.1  # more features than examples, as in the lab
    X, y, w0 = torch.randn(n, d, dtype=torch.float64), torch.randn(n, dtype=torch.float64), \
        torch.randn(d, dtype=torch.float64)
    w = l2sp_closed_form(X, y, w0, alpha).requires_grad_(True)
    loss = ((X @ w - y) ** 2).sum() / (2 * n) + alpha / 2 * ((w - w0) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.abs().max() < 1e-10
    # the same as least squares on the stacked system [X / sqrt(n); sqrt(alpha) I] w = [y / sqrt(n); sqrt(alpha) w0]
    A = torch.cat([X / n ** 0.5, alpha ** 0.5 * torch.eye(d, dtype=X.dtype)])
    b = torch.cat([y / n ** 0.5, alpha ** 0.5 * w0])
    assert torch.allclose(w.detach(), torch.linalg.lstsq(A, b).solution, atol=1e-10)
    # and it is not plain L2 towards 0
    assert (w.detach() - l2sp_closed_form(X, y, torch.zeros(d, dtype=X.dtype), alpha)).norm() > 0.1


def test_split_rows_are_disjoint_stratified_and_cover_every_row():
    targets = [i % 10 for i in range(1797)]
    splits = split_rows(targets, 0.25, 0.2, 0)
    rows = [r for s in splits.values() for r in s]
    assert sorted(rows) == list(range(1797))
    assert abs(len(splits["test"]) - 0.25 * 1797) < 10 and abs(len(splits["val"]) - 0.2 * 1797) < 10
    for part in splits.values():
        assert {targets[r] for r in part} == set(range(10))
    assert split_rows(targets, 0.25, 0.2, 0) == splits
