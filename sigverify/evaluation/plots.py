"""PNG plots of an evaluation: ROC (one or several curves), score histograms, confusion matrix, and for
likelihood ratios the Tippett plot and the empirical cross-entropy (ECE)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sigverify.evaluation.figure import save_figure  # noqa: E402
from sigverify.evaluation.likelihood_ratio import ece, pav_log10_lr, tippett  # noqa: E402
from sigverify.evaluation.metrics import auc, roc  # noqa: E402


def plot_roc(curves: dict, path: Path) -> Path:
    """``curves``: name -> Scores; one ROC each (skilled forgeries as negatives)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in curves.items():
        fpr, tpr, _ = roc(s.genuine, s.skilled)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(s.genuine, s.skilled):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="FAR (skilled forgeries accepted)", ylabel="TPR (genuine accepted)", title="ROC")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_scores(s, threshold: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(min(s.genuine.min(), s.skilled.min()), max(s.genuine.max(), s.skilled.max()), 50)
    ax.hist(s.genuine, bins, alpha=0.6, density=True, label="genuine")
    ax.hist(s.skilled, bins, alpha=0.6, density=True, label="skilled forgery")
    if len(s.random):
        ax.hist(s.random, bins, alpha=0.4, density=True, label="random forgery")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f} (validation)")
    ax.set(xlabel="similarity score", ylabel="density", title="Scores")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion(confusion, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4, 4))
    matrix = np.asarray(confusion)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["accepted", "rejected"], yticklabels=["genuine", "forgery"],
           title="Confusion at the threshold")
    return _save(fig, path)


def plot_tippett(genuine_log10_lr, skilled_log10_lr, path: Path) -> Path:
    """The share of each class whose log10 LR is at or above each value: genuine curves far right, forgeries far
    left; where a curve crosses 0 reads its misleading-evidence rate."""
    fig, ax = plt.subplots(figsize=(6, 4))
    values = np.r_[genuine_log10_lr, skilled_log10_lr]
    pad = max(0.25, 0.05 * float(np.ptp(values)))  # the curves start at 1 and end at 0 inside the plot
    for values, label in ((genuine_log10_lr, "genuine (Hg true)"), (skilled_log10_lr, "skilled forgery (Hf true)")):
        levels, share = tippett(values)
        ax.step(np.r_[levels[0] - pad, levels, levels[-1] + pad], np.r_[1.0, share, 0.0], where="pre", label=label)
    ax.axvline(0.0, color="grey", ls=":")
    ax.set(xlabel="log10 LR", ylabel="proportion with log10 LR >= x", title="Tippett plot", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ece(genuine_log10_lr, skilled_log10_lr, genuine_scores, skilled_scores, path: Path) -> Path:
    """Empirical cross-entropy over prior log10 odds: the system's LRs, the same scores after the best monotone
    (PAV) calibration, and LR = 1 always (no information). Below the neutral curve the LRs help."""
    prior = np.linspace(-2.5, 2.5, 101)
    knots, pav = pav_log10_lr(genuine_scores, skilled_scores)
    at = lambda s: pav[np.searchsorted(knots, np.asarray(s, float))]  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(prior, ece(genuine_log10_lr, skilled_log10_lr, prior), label="LR of this system")
    ax.plot(prior, ece(at(genuine_scores), at(skilled_scores), prior), "--", label="after PAV (discrimination loss only)")
    ax.plot(prior, ece(np.zeros(1), np.zeros(1), prior), ":", color="grey", label="LR = 1 (neutral)")
    ax.set(xlabel="prior log10 odds of genuineness", ylabel="empirical cross-entropy (bits)", title="ECE plot")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    return Path(save_figure(fig, path))
