"""linear: cross-validated accuracy of a logistic regression on the features (a linear probe).

The linear evaluation protocol of representation learning (e.g. Kornblith, Shlens and Le, "Do Better ImageNet
Models Transfer Better?", CVPR 2019, who find it tracks fine-tuned accuracy across ImageNet models); here as a
transferability estimate on the sampled training examples only.

Stratified k-fold cross-validation (shuffled, seeded by --seed; k = --folds, fewer when the smallest class has
fewer examples): in each fold a StandardScaler and a multinomial logistic regression (C = 1, lbfgs, 1000
iterations: scikit-learn's defaults, the same fixed estimator as `diagnose probe`) are fit on the other folds and
predict the held-out one. The score is the pooled out-of-fold accuracy; each example's correctness goes to the
report's McNemar comparison.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from transferlab.ranking.registry import MetricInput, Score, Skipped, register_metric

logger = logging.getLogger(__name__)

C = 1.0
MAX_ITER = 1000


def probe_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))


def cv_correct(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) bool: out-of-fold correctness of the standardised logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        predicted = cross_val_predict(probe_pipeline(), np.asarray(features, dtype=np.float64), labels, cv=cv)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("linear: lbfgs did not converge in %d iterations in some fold", MAX_ITER)
    return predicted == labels


@register_metric("linear", paper="linear probe, as in Kornblith et al., CVPR 2019", accuracy=True,
                 help="stratified k-fold cross-validated logistic-regression accuracy on the features")
def linear(inputs: MetricInput) -> Score:
    present = np.bincount(inputs.labels)
    present = present[present > 0]
    if present.size < 2:
        raise Skipped("a single class in the sample")
    folds = min(inputs.options.folds, int(present.min()))
    if folds < 2:
        raise Skipped("a class has a single example: no stratified folds")
    correct = cv_correct(inputs.features, inputs.labels, folds, inputs.options.seed)
    return Score(float(correct.mean()), correct)
