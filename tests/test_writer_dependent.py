"""The writer-dependent SVM scorer against a plain loop, and on embeddings where the answer is known."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from sigverify.evaluation.protocols import reference_scores
from sigverify.evaluation.writer_dependent import WriterSVM


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_scores_match_one_svm_per_questioned_signature_in_a_plain_loop(kernel):
    rng = np.random.default_rng(0)
    questioned, references, cohort = (unit(rng.standard_normal((n, 16))) for n in (6, 5, 40))
    ours = WriterSVM(cohort, kernel=kernel)(questioned, references)
    for q, score in zip(questioned, ours):
        svm = SVC(kernel=kernel, C=1.0, gamma="scale", class_weight={1: 45 / (2 * 5), 0: 45 / (2 * 40)})
        svm.fit(np.vstack([references, cohort]), [1] * 5 + [0] * 40)
        assert score == pytest.approx(float(svm.decision_function(q[None])[0]), rel=1e-6, abs=1e-9)


def test_the_writers_own_signatures_score_above_forgeries_and_strangers():
    """Each writer signs near their own centre; forgeries sit between it and a stranger's."""
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((6, 32)))
    signers = np.repeat(np.arange(6), 12)
    genuine = np.tile(np.r_[np.ones(8, bool), np.zeros(4, bool)], 6)
    forged_from = centres[(signers + 1) % 6]
    where = np.where(genuine[:, None], centres[signers], unit(centres[signers] + 1.5 * forged_from))
    embeddings = unit(where + 0.05 * rng.standard_normal(where.shape))
    cohort = unit(unit(rng.standard_normal((30, 32)))[:, None] + 0.15 * rng.standard_normal((30, 4, 32))).reshape(-1, 32)
    scores = reference_scores(embeddings, signers, genuine, n_references=5, draws=2, scorer=WriterSVM(cohort))
    for writer in range(6):  # within a writer, ranked right (one global threshold is the screen's question)
        own = scores.subset(np.array([writer]))
        assert own.genuine.min() > own.skilled.max() > np.median(own.random)
    assert WriterSVM(cohort)(embeddings[:0], embeddings[:5]).shape == (0,)
