"""Cohort score normalisation: what a deployment knows besides the signer's references is a cohort of other
people's genuine signatures (here, the training signers'), and how similar any signature is to strangers.

A questioned signature that resembles everybody, or a signer whose references resemble everybody, gets high
raw scores regardless of the truth. S-norm (symmetric normalisation) measures each side against the cohort
and standardises the score by both:

    score = 1/2 [ (s - mu_q) / sigma_q  +  (s - mu_r) / sigma_r ]

where mu, sigma are the mean and standard deviation of that side's similarities to the cohort; AS-norm
(adaptive S-norm, Sturim & Reynolds 2005; Matejka et al. 2017) uses only each side's ``top_k`` most similar
cohort members, the impostors that matter. Under the references protocol the reference side is the
references' mean embedding; under the pairs protocol it is the other signature of the pair.
"""
from __future__ import annotations

import numpy as np

from sigverify.evaluation.protocols import Similarity, cosine, raw_reference_scores

STD_FLOOR = 1e-3  # a side whose cohort similarities barely vary must not divide by ~0


def cohort_statistics(embeddings: np.ndarray, cohort: np.ndarray, top_k: int = 0,
                      similarity: Similarity = cosine) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each embedding's similarities to the cohort: the ``top_k`` highest
    (AS-norm), or all of them with ``top_k`` 0 (S-norm)."""
    sims = similarity(np.atleast_2d(embeddings), cohort)
    if top_k:
        sims = np.sort(sims, axis=1)[:, -min(top_k, sims.shape[1]):]
    return sims.mean(axis=1), np.maximum(sims.std(axis=1), STD_FLOOR)


def normalized(scores: np.ndarray, first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]):
    """S-norm of raw ``scores`` given both sides' cohort statistics (each a (mean, std) pair, broadcastable)."""
    return 0.5 * ((scores - first[0]) / first[1] + (scores - second[0]) / second[1])


def reference_side(references: np.ndarray) -> np.ndarray:
    """The references' side of a comparison: their mean embedding, of unit length."""
    mean = np.asarray(references, float).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def normalize_against_references(questioned: np.ndarray, references: np.ndarray, cohort: np.ndarray,
                                 top_k: int = 0, reduce: str = "mean", similarity: Similarity = cosine) -> np.ndarray:
    """Cohort-normalised scores of questioned embeddings [n, d] against one writer's references [r, d]: the raw
    score is the mean (or max) similarity to the references, as in the references protocol."""
    raw = raw_reference_scores(questioned, references, reduce, similarity)
    return normalized(raw, cohort_statistics(questioned, cohort, top_k, similarity),
                      cohort_statistics(reference_side(references)[None], cohort, top_k, similarity))


def cohort_normalized_similarity(cohort: np.ndarray, top_k: int = 0, similarity: Similarity = cosine) -> Similarity:
    """The pairs protocol's similarity under S-norm (AS-norm with ``top_k``): each side of every pair is measured
    against the cohort, so it plugs into ``pair_scores`` as its ``similarity``."""
    def normed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        mean_a, std_a = cohort_statistics(a, cohort, top_k, similarity)
        mean_b, std_b = cohort_statistics(b, cohort, top_k, similarity)
        return normalized(similarity(a, b), (mean_a[:, None], std_a[:, None]), (mean_b[None], std_b[None]))
    return normed
