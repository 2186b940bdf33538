"""H-score, regularised: how much of the features' variance lies between the class means.

Bao, Li, Huang, Shen, Wang, Zheng, "An Information-Theoretic Approach to Transferability in Task Transfer
Learning", ICIP 2019: H(f) = tr(cov(f)^-1 cov(E[f | y])), where cov(E[f | y]) is the covariance of the features
with each example replaced by its class mean.

Ibrahim, Ponomareva and Mazumder, "Newer is not always better: Rethinking transferability metrics, their
peculiarities, stability and performance", arXiv:2110.06893 (2021): with D comparable to N the sample
covariance is ill-conditioned and its inverse blows the score up; they shrink it with the Ledoit-Wolf estimate,
cov_a(f) = (1 - a) cov(f) + a mu I (a: the Ledoit-Wolf shrinkage, mu: the mean eigenvalue), and scale the
between-class covariance by the same (1 - a):

    H_a(f) = tr(cov_a(f)^-1 (1 - a) cov(E[f | y])).

`transferlab rank` uses the regularised form (sklearn.covariance.LedoitWolf); `hscore_score(..., shrinkage=False)`
is Bao et al.'s (a pseudo-inverse where cov(f) is singular). Covariances are the maximum-likelihood ones (1/N),
as Ledoit-Wolf's. Higher is better; at most the number of classes minus 1 without shrinkage.
"""
from __future__ import annotations

import numpy as np

from transferlab.ranking.registry import MetricInput, register_metric


def class_mean_features(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, D): each row replaced by the mean of its class's rows."""
    out = np.empty_like(f)
    for c in np.unique(labels):
        rows = labels == c
        out[rows] = f[rows].mean(axis=0)
    return out


def hscore_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0, keepdims=True)
    n = f.shape[0]
    g = class_mean_features(f, np.asarray(labels))  # centred too: the class means average to the overall mean
    cov_g = g.T @ g / n
    if shrinkage:
        from sklearn.covariance import LedoitWolf

        lw = LedoitWolf(assume_centered=True).fit(f)
        a = float(lw.shrinkage_)
        cov_f, cov_g = lw.covariance_, (1.0 - a) * cov_g
        try:
            return float(np.trace(np.linalg.solve(cov_f, cov_g)))
        except np.linalg.LinAlgError:  # a = 0 and a singular covariance: fall through to the pseudo-inverse
            pass
    else:
        cov_f = f.T @ f / n
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))


@register_metric("hscore", paper="Bao et al., ICIP 2019; shrinkage: Ibrahim et al., arXiv:2110.06893",
                 help="tr(cov(f)^-1 cov(E[f|y])) with the Ledoit-Wolf shrunk feature covariance")
def hscore(inputs: MetricInput) -> float:
    return hscore_score(inputs.features, inputs.labels, shrinkage=True)
