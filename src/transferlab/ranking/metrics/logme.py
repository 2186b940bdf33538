"""LogME: the maximum log evidence of a Bayesian linear model from the features to the labels.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021.

For each class c the one-hot column y (N,) is regressed on the features F (N, D) with the prior w ~ N(0, I/alpha)
and the noise y - Fw ~ N(0, I/beta). The evidence p(y | F, alpha, beta) has a closed form (the paper's eq. 2):

    log p = N/2 log beta + D/2 log alpha - N/2 log 2pi - beta/2 |Fm - y|^2 - alpha/2 m'm - 1/2 log|A|,
    A = alpha I + beta F'F,  m = beta A^-1 F'y,

which is maximised over alpha and beta by MacKay's fixed-point updates (the paper's Algorithm 1):

    gamma = sum_i beta s_i / (alpha + beta s_i),  alpha <- gamma / m'm,  beta <- (N - gamma) / |Fm - y|^2,

with s_i the eigenvalues of F'F. One SVD of F (F = U S V') makes each update O(min(N, D)): with z = U'y,
m'm = sum (beta s z / (alpha + beta s^2))^2 and |Fm - y|^2 = sum (alpha z / (alpha + beta s^2))^2 + |y|^2 - |z|^2
(the part of y outside F's column space). The score is the maximised log evidence divided by N, averaged over
the classes. Higher is better; it compares models on one target data set, not across data sets.
"""
from __future__ import annotations

import math

import numpy as np

from transferlab.ranking.registry import MetricInput, Skipped, register_metric

MAX_ITER = 100  # the fixed point converges in tens of steps; the paper stops after 11 at 1e-3 relative change
TOL = 1e-8  # relative change of alpha/beta below which the updates stop
_TINY = 1e-300  # keeps m'm and the residual above 0 (a class the features fit exactly)


def log_evidence(alpha: float, beta: float, sigma: np.ndarray, z2: np.ndarray, y_out: float, n: int,
                 d: int) -> float:
    """log p(y | F, alpha, beta) from F's squared singular values `sigma` (r,), the squared projections of y on
    its left singular vectors `z2` (r,) and |y|^2 - |z|^2 `y_out`; F is (n, d), so d - r eigenvalues of F'F are 0."""
    t = alpha + beta * sigma  # (r,) the eigenvalues of A on F's row space
    m2 = float(np.sum(beta ** 2 * sigma * z2 / t ** 2))  # m'm
    res2 = float(np.sum(alpha ** 2 * z2 / t ** 2)) + y_out  # |Fm - y|^2
    log_det = float(np.sum(np.log(t))) + (d - sigma.size) * math.log(alpha)
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)


def maximise_evidence(sigma: np.ndarray, z2: np.ndarray, y_out: float, n: int) -> tuple[float, float]:
    """(alpha, beta) at the fixed point of the evidence updates, from alpha = beta = 1."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITER):
        t = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / t))  # effective number of well-determined parameters
        m2 = max(float(np.sum(beta ** 2 * sigma * z2 / t ** 2)), _TINY)
        res2 = max(float(np.sum(alpha ** 2 * z2 / t ** 2)) + y_out, _TINY)
        new_alpha, new_beta = gamma / m2, max(n - gamma, _TINY) / res2
        new_alpha = max(new_alpha, _TINY)
        done = abs(new_alpha - alpha) <= TOL * alpha and abs(new_beta - beta) <= TOL * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return alpha, beta


def logme_score(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of features (N, D) for integer labels (N,): the mean over classes of the maximised evidence / N."""
    f = np.asarray(features, dtype=np.float64)
    y_all = np.asarray(labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)  # u (N, r), s (r,)
    sigma = s ** 2
    scores = []
    for c in np.unique(y_all):
        y = (y_all == c).astype(np.float64)
        z = u.T @ y  # (r,)
        z2 = z ** 2
        y_out = max(float(y @ y) - float(z2.sum()), 0.0)
        alpha, beta = maximise_evidence(sigma, z2, y_out, n)
        scores.append(log_evidence(alpha, beta, sigma, z2, y_out, n, d) / n)
    return float(np.mean(scores))


@register_metric("logme", paper="You et al., LogME, ICML 2021",
                 help="log evidence of a Bayesian linear regression from the features to each one-hot class, per "
                      "example, mean over classes")
def logme(inputs: MetricInput) -> float:
    if inputs.features.shape[1] == 0:
        raise Skipped("no features")
    return logme_score(inputs.features, inputs.labels)
