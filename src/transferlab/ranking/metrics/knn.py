"""kNN: leave-one-out k-nearest-neighbour accuracy on the standardised features.

The nearest-neighbour classifier as a transferability estimate: Puigcerver et al., "Scalable Transfer Learning
with Expert Models", ICLR 2021 (kNN accuracy of each expert's features on the target, to pick the expert); the
rule itself is Cover and Hart, "Nearest neighbor pattern classification", IEEE Trans. Inf. Theory 1967.

Features are standardised over the sampled examples (each dimension to mean 0 and variance 1; no labels used),
then each example is classified by the majority label of its k nearest other examples (euclidean or cosine
distance; a tie goes to the lowest class index, as scikit-learn's KNeighborsClassifier breaks it). The score is
the fraction classified correctly; each example's correctness goes to the report's McNemar comparison.
"""
from __future__ import annotations

import numpy as np

from transferlab.ranking.registry import MetricInput, Score, Skipped, register_metric


def standardise(features: np.ndarray) -> np.ndarray:
    """Each column to mean 0, variance 1 (a constant column stays 0), as sklearn's StandardScaler."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))


def loo_knn_correct(x: np.ndarray, labels: np.ndarray, k: int, metric: str = "euclidean") -> np.ndarray:
    """(N,) bool: whether the majority label of each row's k nearest other rows is its own label."""
    from sklearn.neighbors import NearestNeighbors

    y = np.asarray(labels)
    n = y.size
    k = min(k, n - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x).kneighbors(x)  # (N, k+1), self included
    neighbours = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        row = idx[i][idx[i] != i]  # self is normally first; with duplicate rows it may be anywhere, or cut off
        neighbours[i] = row[:k]
    votes = np.zeros((n, int(y.max()) + 1))
    np.add.at(votes, (np.repeat(np.arange(n), k), y[neighbours].ravel()), 1.0)
    return np.argmax(votes, axis=1) == y  # argmax: the lowest class among tied counts


@register_metric("knn", paper="Puigcerver et al., ICLR 2021 (kNN of Cover and Hart, 1967)", accuracy=True,
                 help="leave-one-out k-nearest-neighbour accuracy on the standardised features")
def knn(inputs: MetricInput) -> Score:
    if inputs.labels.size < 2:
        raise Skipped("fewer than 2 examples")
    correct = loo_knn_correct(standardise(inputs.features), inputs.labels, inputs.options.k,
                              inputs.options.knn_metric)
    return Score(float(correct.mean()), correct)
