"""NCE: the negative conditional entropy of the target labels given the source head's hard predictions.

Tran, Nguyen and Hassner, "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019.

With z_i = argmax_z theta_z(x_i) the source label the source head predicts and P(y, z) the empirical joint of
(y_i, z_i) over the N target examples,

    NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y, z) / P(z).

0 when the source prediction determines the target label; -log C at worst for C balanced classes. Higher is
better. Needs a source head: skipped without one.
"""
from __future__ import annotations

import numpy as np

from transferlab.ranking.registry import MetricInput, register_metric


def nce_score(source_probs: np.ndarray, labels: np.ndarray) -> float:
    z = np.argmax(np.asarray(source_probs), axis=1)  # (N,) hard source labels
    y = np.asarray(labels)
    n = y.size
    joint = np.zeros((int(y.max()) + 1, int(np.asarray(source_probs).shape[1])))
    np.add.at(joint, (y, z), 1.0)
    joint /= n
    pz = joint.sum(axis=0, keepdims=True)  # (1, S)
    seen = joint > 0
    return float(np.sum(joint[seen] * np.log(joint[seen] / np.broadcast_to(pz, joint.shape)[seen])))


@register_metric("nce", paper="Tran et al., NCE, ICCV 2019", needs_source=True,
                 help="negative conditional entropy of the target label given the source head's argmax label")
def nce(inputs: MetricInput) -> float:
    return nce_score(inputs.source_probs, inputs.labels)
