"""Writer-dependent scoring: one classifier per writer on frozen embeddings (the second stage of SigNet-style
systems, Hafemann et al. 2017). A deployment enrols a writer's references; it also holds a cohort of other
people's genuine signatures (here, the training signers'). An SVM trained on the references (positives)
against the cohort (negatives) learns what sets this writer apart from people in general, and its decision
value is the score of a questioned signature.

Its known weakness is scale: each writer's SVM has its own margin, so one global threshold fits them unevenly.
``benchmarks/scoring_screen.py`` measures it against ``center`` on validation signers before any use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WriterSVM:
    """A per-writer SVM scorer, ``scorer(questioned, references)`` for ``protocols.reference_scores``.

    ``class_weight="balanced"``: a writer has a dozen references against thousands of cohort signatures, and
    unweighted, the SVM would call everything a stranger."""

    cohort: np.ndarray  # [n, d] other writers' genuine embeddings: the negatives
    kernel: str = "rbf"
    c: float = 1.0
    gamma: str | float = "scale"

    def __call__(self, questioned: np.ndarray, references: np.ndarray) -> np.ndarray:
        from sklearn.svm import SVC

        if len(questioned) == 0:
            return np.zeros(0)
        samples = np.concatenate([references, self.cohort])
        labels = np.r_[np.ones(len(references), int), np.zeros(len(self.cohort), int)]
        svm = SVC(kernel=self.kernel, C=self.c, gamma=self.gamma, class_weight="balanced").fit(samples, labels)
        return svm.decision_function(np.atleast_2d(questioned))
