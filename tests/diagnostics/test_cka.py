"""Linear CKA: the estimators against direct computations, its invariances, and the bias of the biased one."""
from __future__ import annotations

import itertools

import pytest
import torch

from transferlab.diagnostics.cka import MinibatchCKA, hsic_unbiased, linear_cka


def _related(n=400, p=30, q=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=torch.float64)
    Y = torch.tanh(X @ torch.randn(p, q, generator=g, dtype=torch.float64)) + 0.5 * torch.randn(
        n, q, generator=g, dtype=torch.float64)
    return X, Y


def _biased_direct(X, Y):
    """Kornblith et al. 2019, eq. after (3): ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return float((Yc.T @ Xc).norm() ** 2 / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm()))


def _hsic_u_statistic(K, L):
    """Song et al. 2012's HSIC_1 from its definition: a U-statistic over ordered 4-tuples of distinct indices,
    h(i,j,q,r) = 1/24 sum over permutations (t,u,v,w) of k_tu l_tu + k_tu l_vw - 2 k_tu l_tv."""
    n = K.shape[0]
    total, count = 0.0, 0
    for idx in itertools.permutations(range(n), 4):
        h = 0.0
        for t, u, v, w in itertools.permutations(idx):
            h += K[t, u] * L[t, u] + K[t, u] * L[v, w] - 2 * K[t, u] * L[t, v]
        total += h / 24
        count += 1
    return total / count


def test_unbiased_hsic_matches_its_u_statistic_definition():
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    K, L = X @ X.T, Y @ Y.T
    assert float(hsic_unbiased(K, L)) == pytest.approx(float(_hsic_u_statistic(K, L)), rel=1e-9, abs=1e-12)


def test_biased_cka_matches_the_feature_space_formula():
    X, Y = _related()
    assert linear_cka(X, Y, unbiased=False) == pytest.approx(_biased_direct(X, Y), rel=1e-9)


def test_minibatch_cka_with_one_batch_equals_full_batch_and_approximates_it_with_many():
    X, Y = _related(n=2000)
    for unbiased in (True, False):
        one = MinibatchCKA(unbiased=unbiased)
        one.update(X[:300], Y[:300])
        assert one.value() == pytest.approx(linear_cka(X[:300], Y[:300], unbiased=unbiased), rel=1e-9)
    acc = MinibatchCKA()
    for i in range(0, 2000, 200):
        acc.update(X[i:i + 200], Y[i:i + 200])
    full = linear_cka(X, Y, unbiased=True)
    assert 0.3 < full < 0.95
    assert acc.value() == pytest.approx(full, abs=0.02)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    X, Y = _related()
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    for unbiased in (True, False):
        base = linear_cka(X, Y, unbiased=unbiased)
        assert linear_cka(X, Y @ Q, unbiased=unbiased) == pytest.approx(base, rel=1e-9)
        assert linear_cka(3.7 * X, 0.01 * Y, unbiased=unbiased) == pytest.approx(base, rel=1e-9)
        acc, ref = MinibatchCKA(unbiased=unbiased), MinibatchCKA(unbiased=unbiased)
        for i in range(0, 400, 100):
            acc.update(5 * X[i:i + 100], Y[i:i + 100] @ Q)
            ref.update(X[i:i + 100], Y[i:i + 100])
        assert acc.value() == pytest.approx(ref.value(), rel=1e-9)
    assert linear_cka(X, X) == pytest.approx(1.0)


def test_independent_representations_score_near_zero_only_with_the_unbiased_estimator():
    g = torch.Generator().manual_seed(7)
    unbiased, biased = MinibatchCKA(unbiased=True), MinibatchCKA(unbiased=False)
    for _ in range(10):  # batches of 64 examples, 512 features: many more features than examples
        x, y = torch.randn(64, 512, generator=g), torch.randn(64, 512, generator=g)
        unbiased.update(x, y)
        biased.update(x, y)
    assert abs(unbiased.value()) < 0.05
    assert biased.value() > 0.5


def test_small_batches_are_skipped_and_too_few_examples_is_nan():
    acc = MinibatchCKA()
    acc.update(torch.randn(3, 4), torch.randn(3, 4))
    assert acc.batches == 0 and acc.value() != acc.value()
