"""Each metric against an independent computation of its paper's formula, and every metric ranks separable
features above noise."""
from __future__ import annotations

import math

import numpy as np
import pytest

from transferlab.ranking.metrics.hscore import hscore_score
from transferlab.ranking.metrics.knn import loo_knn_correct, standardise
from transferlab.ranking.metrics.leep import leep_score
from transferlab.ranking.metrics.linear import cv_correct, probe_pipeline
from transferlab.ranking.metrics.logme import logme_score
from transferlab.ranking.metrics.nce import nce_score
from transferlab.ranking.registry import NO_SOURCE_HEAD, MetricInput, Skipped, get_metric, list_metrics


# ---- LogME ---------------------------------------------------------------------------------------------------
def _direct_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The evidence of You et al.'s eq. 2 computed from A and m directly (no SVD)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * float(np.sum((f @ m - y) ** 2)) - alpha / 2 * float(m @ m) - logdet / 2)


def _brute_force_logme(f: np.ndarray, labels: np.ndarray) -> float:
    from scipy.optimize import minimize

    scores = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        best = None
        for start in ([0.0, 0.0], [2.0, 1.0], [-2.0, 2.0]):  # several starts: the maximum, not a local one
            r = minimize(lambda p: -_direct_log_evidence(f, y, math.exp(p[0]), math.exp(p[1])), start,
                         method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
            best = r if best is None or r.fun < best.fun else best
        scores.append(-best.fun / f.shape[0])
    return float(np.mean(scores))


def test_logme_equals_a_brute_force_maximisation_of_the_evidence():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)  # 60 examples, 3 classes
    f = rng.normal(size=(60, 5)) + 0.8 * np.eye(5)[labels % 5]  # 5 features, weakly informative
    assert logme_score(f, labels) == pytest.approx(_brute_force_logme(f, labels), rel=1e-4)


def test_logme_with_more_features_than_examples_is_finite():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(2), 10)
    f = rng.normal(size=(20, 50))
    assert math.isfinite(logme_score(f, labels))
    assert logme_score(f, labels) == pytest.approx(_brute_force_logme(f, labels), rel=1e-4)


# ---- LEEP and NCE: a toy case worked out by hand -------------------------------------------------------------
# 4 examples, source classes z in {0, 1}, target classes y in {0, 1}.
#   x1: theta = (0.8, 0.2), y = 0      x2: theta = (0.6, 0.4), y = 0
#   x3: theta = (0.2, 0.8), y = 1      x4: theta = (0.4, 0.6), y = 0
# Empirical joint P(y, z) = 1/4 sum of theta over the examples of y:
#   P(0, .) = (0.8 + 0.6 + 0.4, 0.2 + 0.4 + 0.6) / 4 = (0.45, 0.30)
#   P(1, .) = (0.2, 0.8) / 4                            = (0.05, 0.20)
#   P(z) = (0.50, 0.50), so P(y | z): P(0|0) = 0.9, P(1|0) = 0.1, P(0|1) = 0.6, P(1|1) = 0.4
# Expected empirical prediction of each example's own label, sum_z P(y_i|z) theta_z(x_i):
#   x1: 0.9*0.8 + 0.6*0.2 = 0.84     x2: 0.9*0.6 + 0.6*0.4 = 0.78
#   x3: 0.1*0.2 + 0.4*0.8 = 0.34     x4: 0.9*0.4 + 0.6*0.6 = 0.72
# LEEP = (log 0.84 + log 0.78 + log 0.34 + log 0.72) / 4
# NCE: z = argmax theta = (0, 0, 1, 1); the joint of (y, z): P(0,0) = 2/4, P(0,1) = 1/4, P(1,1) = 1/4, P(1,0) = 0;
#   P(z=0) = P(z=1) = 1/2; H(Y|Z) = -[1/2 log 1 + 1/4 log 1/2 + 1/4 log 1/2] = 1/2 log 2; NCE = -1/2 log 2.
THETA = np.array([[0.8, 0.2], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6]])
Y = np.array([0, 0, 1, 0])


def test_leep_on_the_hand_computed_toy_case():
    expected = (math.log(0.84) + math.log(0.78) + math.log(0.34) + math.log(0.72)) / 4
    assert leep_score(THETA, Y) == pytest.approx(expected, rel=1e-12)


def test_nce_on_the_hand_computed_toy_case():
    assert nce_score(THETA, Y) == pytest.approx(-0.5 * math.log(2), rel=1e-12)


def test_leep_and_nce_are_skipped_without_a_source_head():
    inputs = MetricInput(np.zeros((4, 2)), Y, None)
    for name in ("leep", "nce"):
        with pytest.raises(Skipped, match=NO_SOURCE_HEAD):
            get_metric(name).score(inputs)


# ---- H-score -------------------------------------------------------------------------------------------------
def _numpy_hscore(f: np.ndarray, labels: np.ndarray, shrink: float | None) -> float:
    """tr(cov(f)^-1 cov(E[f|y])) from its definition; with `shrink` a, Ledoit-Wolf's target written out:
    cov_a = (1 - a) cov + a (tr cov / D) I, and the between-class covariance scaled by (1 - a)."""
    f = f - f.mean(axis=0)
    n, d = f.shape
    cov = f.T @ f / n
    means = {c: f[labels == c].mean(axis=0) for c in np.unique(labels)}
    g = np.stack([means[c] for c in labels])
    cov_g = g.T @ g / n
    if shrink is not None:
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
        cov_g = (1 - shrink) * cov_g
    return float(np.trace(np.linalg.inv(cov) @ cov_g))


def test_hscore_without_shrinkage_equals_numpy():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 200)
    f = rng.normal(size=(200, 6)) + labels[:, None] * np.linspace(0, 1, 6)
    assert hscore_score(f, labels, shrinkage=False) == pytest.approx(_numpy_hscore(f, labels, None), rel=1e-9)


def test_hscore_with_ledoit_wolf_shrinkage_equals_numpy():
    from sklearn.covariance import ledoit_wolf_shrinkage

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    f = rng.normal(size=(40, 30)) + labels[:, None] * 0.3  # D close to N: the shrinkage matters
    a = ledoit_wolf_shrinkage(f - f.mean(axis=0), assume_centered=True)
    assert 0 < a < 1
    assert hscore_score(f, labels, shrinkage=True) == pytest.approx(_numpy_hscore(f, labels, a), rel=1e-9)
    assert hscore_score(f, labels, shrinkage=True) < hscore_score(f, labels, shrinkage=False)


# ---- kNN and linear against scikit-learn called directly --------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_equals_sklearn_leave_one_out(metric):
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 90)
    x = standardise(rng.normal(size=(90, 4)) + labels[:, None] * 0.7)
    ours = loo_knn_correct(x, labels, 5, metric).mean()
    theirs = cross_val_score(KNeighborsClassifier(5, metric=metric), x, labels, cv=LeaveOneOut()).mean()
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_linear_equals_sklearn_cross_validation():
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 120)
    f = rng.normal(size=(120, 8)) + labels[:, None] * 0.5
    cv = StratifiedKFold(5, shuffle=True, random_state=7)
    theirs = (cross_val_predict(probe_pipeline(), f, labels, cv=cv) == labels).mean()
    assert cv_correct(f, labels, 5, 7).mean() == pytest.approx(theirs, abs=1e-12)


# ---- every metric ranks separable features above noise --------------------------------------------------------
def _toy(separable: bool, seed: int = 6) -> MetricInput:
    rng = np.random.default_rng(seed)
    n, classes, d, sources = 150, 3, 16, 6
    labels = np.repeat(np.arange(classes), n // classes)
    f = rng.normal(size=(n, d))
    logits = rng.normal(size=(n, sources))
    if separable:
        f[:, :classes] += 3.0 * np.eye(classes)[labels]  # class means 3 sd apart
        logits[:, :classes] += 4.0 * np.eye(classes)[labels]  # the source head predicts a class-aligned source label
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return MetricInput(f, labels, probs)


@pytest.mark.parametrize("metric", [m.name for m in list_metrics()])
def test_every_metric_scores_separable_features_above_noise(metric):
    m = get_metric(metric)
    assert m.score(_toy(True)).value > m.score(_toy(False)).value
