"""Deep Embedded Validation (You et al., ICML 2019, "Towards Accurate Model Selection in Deep Unsupervised
Domain Adaptation"): an estimate of a model's risk on the target distribution from labelled source validation
examples and unlabelled target examples, without a target label.

1. A domain classifier on the model's pooled features tells source training examples from target examples
   (logistic regression on standardised features; its regularisation picked on a seeded held-out fifth, as the
   paper picks its classifier's weight decay).
2. Each source validation example gets the importance weight w = p(target|x) / p(source|x) * n_s / n_t
   (n_s, n_t: the domain classifier's training examples of each domain).
3. With l the example's loss (cross-entropy), the risk is mean(w l) + eta mean(w) - eta, where the control
   variate eta = -Cov(w l, w) / Var(w) (sample covariance and variance) removes much of the estimate's variance:
   mean(w) is 1 in expectation, so the correction has mean zero.
Lower is better: among runs on the same source and target data, select the one with the lowest risk.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.training.evaluate import ordered_loader, to_device

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5000  # per domain for the domain classifier (a seeded subsample beyond): its fit stays seconds
_C_GRID = (0.01, 0.1, 1.0, 10.0)


def dev_risk(weights: np.ndarray, losses: np.ndarray) -> dict:
    """{"risk", "eta", "mean_weight"}: DEV's control-variate estimate from importance weights (N,) and losses (N,)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    wl = w * np.asarray(losses, dtype=np.float64).ravel()
    var = float(np.var(w, ddof=1)) if w.size > 1 else 0.0
    eta = -float(np.cov(wl, w, ddof=1)[0, 1]) / var if var > 0 else 0.0
    return {"risk": float(wl.mean() + eta * w.mean() - eta), "eta": eta, "mean_weight": float(w.mean())}


def importance_weights(source: np.ndarray, target: np.ndarray, validation: np.ndarray, seed: int = 0
                       ) -> tuple[np.ndarray, dict]:
    """w = p(target|x) / p(source|x) * n_s / n_t for each validation row, from a domain classifier fitted on
    source (N_s, D) and target (N_t, D) features; and facts about the classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target]).astype(np.float64)
    y = np.concatenate([np.ones(len(source)), np.zeros(len(target))])  # 1: source, 0: target
    order = np.random.default_rng(seed).permutation(len(x))
    cut = max(1, int(0.8 * len(x))) if len(x) >= 5 else len(x)
    fit, held = order[:cut], order[cut:]
    if len(np.unique(y[fit])) < 2:  # too few rows to hold any out and still see both domains
        fit, held = order, order
    scaler = StandardScaler().fit(x[fit])
    best = None
    for c in _C_GRID:
        clf = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(x[fit]), y[fit])
        accuracy = float((clf.predict(scaler.transform(x[held])) == y[held]).mean()) if len(held) else 0.0
        if best is None or accuracy > best[0]:
            best = (accuracy, c, clf)
    accuracy, c, clf = best
    proba = clf.predict_proba(scaler.transform(validation.astype(np.float64)))  # columns: classes_ = [0, 1]
    p_target, p_source = proba[:, 0], proba[:, 1]
    n_s, n_t = float(y[fit].sum()), float(len(fit) - y[fit].sum())
    weights = p_target / np.clip(p_source, 1e-12, None) * n_s / n_t
    return weights, {"domain_accuracy": accuracy, "domain_c": c, "n_source": int(n_s), "n_target": int(n_t)}


def deep_embedded_validation(model, source_train, source_val, target, collate, target_collate, device,
                             batch_size: int = 64, seed: int = 0) -> dict:
    """DEV of a trained model (its selected weights): features of the source training and target sets fit the
    domain classifier, the source validation set gives the weighted losses. Target labels are never read."""
    model.eval()
    src, _ = _features(model, _capped(source_train, seed), collate, device, batch_size)
    tgt, _ = _features(model, _capped(target, seed + 1), target_collate, device, batch_size)
    val, losses = _features(model, source_val, collate, device, batch_size, with_loss=True)
    weights, facts = importance_weights(src, tgt, val, seed)
    result = {**dev_risk(weights, losses), **facts, "n_val": int(len(val)),
              "source_val_loss": float(losses.mean()) if len(losses) else float("nan")}
    logger.info("DEV: risk %.4f (eta %.3f, mean weight %.3f, domain classifier accuracy %.3f)", result["risk"],
                result["eta"], result["mean_weight"], result["domain_accuracy"])
    return result


def _capped(dataset, seed: int):
    if len(dataset) <= MAX_EXAMPLES or not hasattr(dataset, "subset"):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), MAX_EXAMPLES, replace=False))
    return dataset.subset([int(i) for i in keep])


@torch.no_grad()
def _features(model, dataset, collate, device, batch_size: int, with_loss: bool = False):
    """Pooled features (N, D) and, with `with_loss`, per-example cross-entropy (N,) in dataset order."""
    feats, losses = [], []
    for batch in ordered_loader(dataset, batch_size, collate):
        labels = batch.pop("labels", None)
        if labels is not None and labels.numel() == 0:
            continue
        batch = to_device(batch, device)
        f = model.features(batch)
        feats.append(f.float().cpu())
        if with_loss:
            losses.append(F.cross_entropy(model.head(f).float(), labels.to(device), reduction="none").cpu())
    features = torch.cat(feats).numpy() if feats else np.zeros((0, 0))
    return features, (torch.cat(losses).numpy() if losses else np.zeros(0))
