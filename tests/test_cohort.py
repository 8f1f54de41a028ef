"""Cohort normalisation (S-norm, AS-norm) against a plain loop over comparisons, on random embeddings."""
from __future__ import annotations

import numpy as np
import pytest

from sigverify.evaluation.cohort import cohort_normalized_similarity, normalize_against_references
from sigverify.evaluation.protocols import pair_scores, reference_scores


def unit(rng, n, d=16):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cohort_stats(vector, cohort, top_k):
    sims = sorted(float(vector @ c) for c in cohort)
    kept = sims[-top_k:] if top_k else sims
    return np.mean(kept), max(np.std(kept), 1e-3)


@pytest.mark.parametrize("top_k", [0, 5])
def test_normalised_scores_match_a_plain_loop(top_k):
    rng = np.random.default_rng(0)
    questioned, references, cohort = unit(rng, 7), unit(rng, 4), unit(rng, 30)
    ours = normalize_against_references(questioned, references, cohort, top_k)
    centre = references.mean(0) / np.linalg.norm(references.mean(0))

    for q, score in zip(questioned, ours):
        raw = np.mean([q @ r for r in references])
        (mq, sq), (mr, sr) = cohort_stats(q, cohort, top_k), cohort_stats(centre, cohort, top_k)
        assert score == pytest.approx(0.5 * ((raw - mq) / sq + (raw - mr) / sr), rel=1e-9)


@pytest.mark.parametrize("top_k", [0, 5])
def test_normalised_pair_scores_match_a_plain_loop(top_k):
    """The pairs protocol under S-norm / AS-norm: every pair (genuine-genuine, genuine-forgery, genuine-other
    signer's first genuine) standardised by both signatures' own cohort statistics, pair by pair."""
    rng = np.random.default_rng(2)
    embeddings, cohort = unit(rng, 24), unit(rng, 30)
    signers, genuine = np.repeat(np.arange(3), 8), np.tile(np.r_[np.ones(5, bool), np.zeros(3, bool)], 3)
    ours = pair_scores(embeddings, signers, genuine, cohort_normalized_similarity(cohort, top_k))

    def snorm(a, b):
        (ma, sa), (mb, sb) = cohort_stats(a, cohort, top_k), cohort_stats(b, cohort, top_k)
        return 0.5 * ((a @ b - ma) / sa + (a @ b - mb) / sb)

    expected = {"genuine": [], "skilled": [], "random": []}
    for signer in range(3):
        mine = [i for i in range(24) if signers[i] == signer]
        real, forged = [i for i in mine if genuine[i]], [i for i in mine if not genuine[i]]
        firsts = [next(i for i in range(24) if signers[i] == other and genuine[i]) for other in range(3) if other != signer]
        expected["genuine"] += [snorm(embeddings[i], embeddings[j]) for n, i in enumerate(real) for j in real[n + 1:]]
        expected["skilled"] += [snorm(embeddings[i], embeddings[j]) for i in real for j in forged]
        expected["random"] += [snorm(embeddings[i], embeddings[j]) for i in real for j in firsts]
    for kind, values in expected.items():
        np.testing.assert_allclose(getattr(ours, kind), values, rtol=1e-9)


def test_the_references_protocol_takes_a_cohort_scorer():
    """The protocol's draws are unchanged; only the score of each comparison is the scorer's."""
    rng = np.random.default_rng(1)
    embeddings, cohort = unit(rng, 40), unit(rng, 20)
    signers, genuine = np.repeat(np.arange(4), 10), np.tile(np.r_[np.ones(7, bool), np.zeros(3, bool)], 4)
    plain = reference_scores(embeddings, signers, genuine, n_references=3, draws=2, normalize="none", seed=4)
    normed = reference_scores(embeddings, signers, genuine, n_references=3, draws=2, seed=4,
                              scorer=lambda q, r: normalize_against_references(q, r, cohort, 5))
    assert len(normed.genuine) == len(plain.genuine) and np.array_equal(normed.skilled_users, plain.skilled_users)
    assert not np.allclose(normed.genuine, plain.genuine)


def test_an_unknown_reduction_is_refused_not_read_as_max():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="reduce must be one of"):
        normalize_against_references(unit(rng, 2), unit(rng, 3), unit(rng, 5), reduce="median")
