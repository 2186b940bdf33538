"""Linear CKA (Kornblith et al. 2019), full-batch and in minibatches (Nguyen et al. 2021).

CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = X X^T, L = Y Y^T.

- The *biased* estimator centres the Gram matrices (HSIC_0 = tr(K H L H) / (n-1)^2). It is what most code
  computes, but for independent representations with many features per example it is far from 0.
- The *unbiased* estimator HSIC_1 (Song et al. 2012) removes that bias. Nguyen et al. ("Do wide and deep
  networks learn the same things?", 2021) average HSIC_1 over minibatches, which is unbiased for the
  full-data HSIC and needs memory for one minibatch only: `MinibatchCKA`.
"""
from __future__ import annotations

import torch

MIN_BATCH = 4  # the unbiased HSIC estimator divides by n (n - 3) and (n - 1)(n - 2): a minibatch needs 4 examples


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) / (n-1)^2, with H the centring matrix. K, L: (n, n)."""
    n = K.shape[0]
    H = torch.eye(n, dtype=K.dtype, device=K.device) - 1.0 / n
    return torch.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """HSIC_1 of Song et al. 2012, eq. 5 (needs n >= 4). K, L: (n, n) Gram matrices."""
    n = K.shape[0]
    if n < MIN_BATCH:
        raise ValueError(f"the unbiased HSIC estimator needs at least {MIN_BATCH} examples per batch, got {n}")
    K = K.clone()
    L = L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    KL = K @ L
    ones_K = K.sum()
    ones_L = L.sum()
    term1 = torch.trace(KL)
    term2 = ones_K * ones_L / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * KL.sum()
    return (term1 + term2 - term3) / (n * (n - 3))


def linear_cka(X: torch.Tensor, Y: torch.Tensor, unbiased: bool = True) -> float:
    """Full-batch linear CKA between X (n, p) and Y (n, q)."""
    X, Y = _as_2d(X), _as_2d(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need the same number of examples, got {X.shape[0]} and {Y.shape[0]}")
    K, L = X @ X.T, Y @ Y.T
    hsic = hsic_unbiased if unbiased else hsic_biased
    xy, xx, yy = hsic(K, L), hsic(K, K), hsic(L, L)
    return _ratio(xy, xx, yy)


def _ratio(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> float:
    denom = torch.sqrt(xx.clamp(min=0) * yy.clamp(min=0))
    if denom <= 0:
        return float("nan")  # a constant representation: CKA is undefined
    return float(xy / denom)


class MinibatchCKA:
    """Accumulates HSIC per minibatch and returns CKA from the averages (Nguyen et al. 2021, eq. 3).

        acc = MinibatchCKA()
        for x, y in batches:            # x: (B, p), y: (B, q), the same examples in the same order
            acc.update(x, y)
        acc.value()                      # mean HSIC(x, y) / sqrt(mean HSIC(x, x) * mean HSIC(y, y))

    Batches with fewer than 4 examples (the unbiased estimator's minimum) are skipped.
    """

    def __init__(self, unbiased: bool = True):
        self.unbiased = unbiased
        self.xy = self.xx = self.yy = 0.0
        self.batches = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = _as_2d(x.detach()), _as_2d(y.detach())
        if x.shape[0] < MIN_BATCH:
            return
        K, L = x @ x.T, y @ y.T
        hsic = hsic_unbiased if self.unbiased else hsic_biased
        self.xy += float(hsic(K, L))
        self.xx += float(hsic(K, K))
        self.yy += float(hsic(L, L))
        self.batches += 1

    def value(self) -> float:
        if self.batches == 0:
            return float("nan")
        f64 = torch.float64
        return _ratio(torch.tensor(self.xy, dtype=f64), torch.tensor(self.xx, dtype=f64),
                      torch.tensor(self.yy, dtype=f64))
