"""LEEP: the log expected empirical prediction of the source classifier, read through the target labels.

Nguyen, Hassner, Seeger and Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned
Representations", ICML 2020.

theta(x) (S,) is the source head's softmax over the source classes z. From the N target examples:

    P(y, z) = 1/N sum_{i: y_i = y} theta_z(x_i)      (the empirical joint, C x S)
    P(y | z) = P(y, z) / sum_y' P(y', z)
    LEEP = 1/N sum_i log sum_z P(y_i | z) theta_z(x_i)

the average log-likelihood of the "expected empirical predictor" that maps a source prediction to target labels.
Higher (closer to 0) is better. Needs a source head: skipped without one.
"""
from __future__ import annotations

import numpy as np

from transferlab.ranking.registry import MetricInput, register_metric

_TINY = 1e-300


def leep_score(source_probs: np.ndarray, labels: np.ndarray) -> float:
    theta = np.asarray(source_probs, dtype=np.float64)  # (N, S)
    y = np.asarray(labels)
    n = theta.shape[0]
    classes = int(y.max()) + 1
    joint = np.zeros((classes, theta.shape[1]))
    np.add.at(joint, y, theta)  # row y: the sum of theta over the examples of class y
    joint /= n
    pz = joint.sum(axis=0)  # (S,) the marginal of z
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z), (C, S)
    eep = np.einsum("ns,ns->n", theta, cond[y])  # (N,): sum_z P(y_i | z) theta_z(x_i)
    return float(np.mean(np.log(np.maximum(eep, _TINY))))


@register_metric("leep", paper="Nguyen et al., LEEP, ICML 2020", needs_source=True,
                 help="mean log-likelihood of the target labels under the source head's predictions mapped to "
                      "target classes by their empirical conditional P(y|z)")
def leep(inputs: MetricInput) -> float:
    return leep_score(inputs.source_probs, inputs.labels)
