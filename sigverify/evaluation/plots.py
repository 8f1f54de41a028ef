"""PNG plots of an evaluation: ROC (one or several curves), score histograms, confusion matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
