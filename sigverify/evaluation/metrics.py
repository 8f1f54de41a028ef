"""Verification metrics on similarity scores. Higher score = more likely genuine; a questioned
signature is accepted when ``score >= threshold``.

Vocabulary: FRR = genuine rejected; FAR = forgery accepted (skilled: imitations of the signer;
random: other signers' genuine signatures). TPR = 1 - FRR, FPR = FAR on the negatives given.
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


class MetricsError(ValueError):
    pass


def _check(genuine: np.ndarray, forgery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    genuine, forgery = np.asarray(genuine, float).ravel(), np.asarray(forgery, float).ravel()
    if len(genuine) == 0:
        raise MetricsError("no genuine scores: cannot compute verification metrics")
    if len(forgery) == 0:
        raise MetricsError("no forgery scores: cannot compute verification metrics (are there forgeries for these signers?)")
    return genuine, forgery


def roc(genuine, forgery) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from scikit-learn, genuine as the positive class."""
    genuine, forgery = _check(genuine, forgery)
    y = np.r_[np.ones(len(genuine)), np.zeros(len(forgery))]
    return roc_curve(y, np.r_[genuine, forgery], drop_intermediate=False)


def auc(genuine, forgery) -> float:
    genuine, forgery = _check(genuine, forgery)
    return float(roc_auc_score(np.r_[np.ones(len(genuine)), np.zeros(len(forgery))], np.r_[genuine, forgery]))


def eer(genuine, forgery) -> tuple[float, float]:
    """(equal error rate, its threshold): where FAR = FRR, linearly interpolated on the ROC."""
    fpr, tpr, thr = roc(genuine, forgery)
    fnr = 1 - tpr
    diff = fpr - fnr  # rises from -1 (threshold +inf) to +1
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        threshold = thr[i] if np.isfinite(thr[i]) else thr[i + 1]
        return float((fpr[i] + fnr[i]) / 2), float(threshold)
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    rate = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    t_prev = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(rate), float(t_prev + w * (thr[i] - t_prev))


def threshold_at_far(forgery, target_far: float) -> float:
    """The lowest threshold whose FAR on ``forgery`` is at most ``target_far``."""
    forgery = np.sort(np.asarray(forgery, float))[::-1]
    allowed = int(np.floor(target_far * len(forgery)))  # this many forgeries may pass
    if allowed >= len(forgery):
        return float(forgery[-1])
    return float(np.nextafter(forgery[allowed], np.inf))


def rates_at(threshold: float, genuine, skilled, random=None) -> dict:
    """Error rates of a fixed threshold: accuracy (genuine vs skilled), TPR/FRR, FAR skilled/random."""
    genuine, skilled = _check(genuine, skilled)
    tp, fp = int((genuine >= threshold).sum()), int((skilled >= threshold).sum())
    fn, tn = len(genuine) - tp, len(skilled) - fp
    out = {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "tpr": tp / len(genuine),
        "frr": fn / len(genuine),
        "fpr": fp / len(skilled),
        "far_skilled": fp / len(skilled),
        "far_random": None,
        "hter": (fn / len(genuine) + fp / len(skilled)) / 2,  # half total error: (FRR + FAR skilled) / 2
        "confusion": [[tp, fn], [fp, tn]],  # rows: actual genuine, forgery; cols: accepted, rejected
    }
    if random is not None and len(random):
        out["far_random"] = float((np.asarray(random) >= threshold).mean())
    return out


def per_user(genuine, forgery, genuine_users, forgery_users) -> dict:
    """EER with a threshold per user (mean over users) and the mean per-user AUC."""
    genuine, forgery = _check(genuine, forgery)
    genuine_users, forgery_users = np.asarray(genuine_users), np.asarray(forgery_users)
    eers, aucs = [], []
    for u in np.unique(genuine_users):
        g, f = genuine[genuine_users == u], forgery[forgery_users == u]
        if len(g) and len(f):
            eers.append(eer(g, f)[0])
            aucs.append(auc(g, f))
    if not eers:
        raise MetricsError("no user has both genuine and forgery scores")
    return {"eer_user_threshold": float(np.mean(eers)), "mean_user_auc": float(np.mean(aucs)), "n_users": len(eers)}


def subset_eer(genuine, forgery, genuine_users, forgery_users, size: int = 5) -> dict:
    """EER with its threshold found a posteriori on each ``size``-writer subset of the users, over every such
    subset: how papers that test on a handful of writers (e.g. 5 of CEDAR's 55) report, for putting a figure
    in their units. A diagnostic only: the threshold is chosen on the very writers it is judged on."""
    genuine, forgery = _check(genuine, forgery)
    genuine_users, forgery_users = np.asarray(genuine_users), np.asarray(forgery_users)
    users = np.intersect1d(genuine_users, forgery_users)
    if len(users) < size:
        raise MetricsError(f"{len(users)} users have genuine and forgery scores; a subset needs {size}")
    eers = [eer(genuine[np.isin(genuine_users, group)], forgery[np.isin(forgery_users, group)])[0]
            for group in combinations(users, size)]
    return {"eer_mean": float(np.mean(eers)), "eer_std": float(np.std(eers)), "subsets": len(eers), "size": size}


def bootstrap_ci(statistic: Callable[[np.ndarray], float], users: np.ndarray, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``statistic(sampled_users)`` resampling users (signers) with replacement.

    ``statistic`` receives an array of user ids (with repeats) and returns a number; resamples for
    which it raises :class:`MetricsError` (e.g. no forgeries drawn) are skipped.
    """
    users = np.unique(users)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        try:
            values.append(statistic(rng.choice(users, size=len(users), replace=True)))
        except MetricsError:
            continue
    if not values:
        return (float("nan"), float("nan"))
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
