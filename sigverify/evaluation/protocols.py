"""How test comparisons are formed from embeddings: the ``pairs`` and ``references`` protocols.

Both return a :class:`Scores`: genuine scores (should be accepted), skilled-forgery scores and
random-forgery scores (other signers' genuine), each with the signer it belongs to. Two signatures
are compared by ``similarity`` (default: the cosine similarity of unit embeddings, ``a @ b.T``);
the shortcut floor (``shortcut.py``) passes another one and is scored by the same code.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Protocol = Literal["pairs", "references"]
PROTOCOLS = get_args(Protocol)

Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit-length embeddings, [len(a), len(b)]."""
    return a @ b.T


@dataclass
class Scores:
    genuine: np.ndarray
    skilled: np.ndarray
    random: np.ndarray
    genuine_users: np.ndarray
    skilled_users: np.ndarray
    random_users: np.ndarray

    def subset(self, users: np.ndarray) -> "Scores":
        """Scores of the given users, repeats included (for the signer bootstrap)."""
        fields = {}
        for kind in ("genuine", "skilled", "random"):
            values, owners = getattr(self, kind), getattr(self, f"{kind}_users")
            picks = [np.flatnonzero(owners == u) for u in users]
            idx = np.concatenate(picks) if picks else np.zeros(0, int)
            fields[kind], fields[f"{kind}_users"] = values[idx], owners[idx]
        return Scores(**fields)


def pair_scores(embeddings: np.ndarray, signers: np.ndarray, genuine: np.ndarray,
                similarity: Similarity = cosine) -> Scores:
    """All pairs within each signer: genuine-genuine (n_g choose 2) vs genuine-skilled (n_g * n_f).

    Random forgeries: each signer's genuine signatures against one genuine signature of every other signer.
    """
    embeddings, signers, genuine = np.asarray(embeddings, np.float64), np.asarray(signers), np.asarray(genuine, bool)
    g_scores, f_scores, r_scores, g_users, f_users, r_users = [], [], [], [], [], []
    users = np.unique(signers)
    first_genuine = {u: np.flatnonzero((signers == u) & genuine)[:1] for u in users}
    for u in users:
        g = embeddings[(signers == u) & genuine]
        f = embeddings[(signers == u) & ~genuine]
        sim_gg = similarity(g, g)
        iu = np.triu_indices(len(g), k=1)
        g_scores.append(sim_gg[iu]), g_users.append(np.full(len(iu[0]), u))
        f_scores.append(similarity(g, f).ravel()), f_users.append(np.full(len(g) * len(f), u))
        others = np.concatenate([first_genuine[o] for o in users if o != u]) if len(users) > 1 else np.zeros(0, int)
        r = similarity(g, embeddings[others]).ravel() if len(others) else np.zeros(0)
        r_scores.append(r), r_users.append(np.full(len(r), u))
    return Scores(*(np.concatenate(x) for x in (g_scores, f_scores, r_scores, g_users, f_users, r_users)))


Reduction = Literal["mean", "max"]
Normalization = Literal["none", "center", "z"]
REDUCTIONS, NORMALIZATIONS = get_args(Reduction), get_args(Normalization)


def check_reference_options(reduce: str, normalize: str) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def raw_reference_scores(questioned: np.ndarray, references: np.ndarray, reduce: str = "mean",
                         similarity: Similarity = cosine) -> np.ndarray:
    """The mean (or max) similarity of each questioned embedding [n, d] to one writer's references [r, d]."""
    check_reference_options(reduce, "none")
    to_references = similarity(np.atleast_2d(questioned), references)
    return to_references.mean(axis=1) if reduce == "mean" else to_references.max(axis=1)


def score_against_references(questioned: np.ndarray, references: np.ndarray, reduce: str = "mean",
                             normalize: str = "center", similarity: Similarity = cosine) -> np.ndarray:
    """Scores of questioned embeddings [n, d] against one writer's reference embeddings [r, d].

    The raw score is the mean (or max) cosine similarity to the references. A single global threshold
    then has to serve writers who sign very consistently and writers who don't; ``normalize`` uses the
    references' similarities to each other (genuine-only data, available at enrolment) to put every
    writer on one scale:

    - ``center``: minus the mean reference-reference similarity;
    - ``z``: that, divided by the standard deviation of the reference-reference similarities;
    - ``none``: the raw score.
    """
    check_reference_options(reduce, normalize)
    if len(questioned) == 0:
        return np.zeros(0)
    raw = raw_reference_scores(questioned, references, reduce, similarity)
    if normalize == "none":
        return raw
    if len(references) < 2:
        raise ValueError(f"normalize={normalize!r} needs at least 2 references, got {len(references)}")
    mutual = similarity(references, references)[np.triu_indices(len(references), k=1)]
    centred = raw - mutual.mean()
    # The floor keeps a writer with near-identical references from dividing by ~0.
    return centred if normalize == "center" else centred / max(float(mutual.std()), 1e-2)


def reference_scores(embeddings: np.ndarray, signers: np.ndarray, genuine: np.ndarray, n_references: int = 12,
                     draws: int = 5, reduce: str = "mean", n_random: int = 10, seed: int = 0,
                     normalize: str = "center", similarity: Similarity = cosine, scorer=None) -> Scores:
    """Enrol ``n_references`` genuine signatures per signer; score each remaining genuine, each skilled
    forgery and ``n_random`` other signers' genuine signatures against the references with
    :func:`score_against_references` (or ``scorer(questioned, references)``, e.g. a cohort normalisation).
    Repeated over ``draws`` random draws of the references (scores pooled).
    """
    def score(questioned: np.ndarray, references: np.ndarray) -> np.ndarray:
        if scorer is not None:
            return scorer(questioned, references)
        return score_against_references(questioned, references, reduce, normalize, similarity)

    check_reference_options(reduce, normalize)
    embeddings, signers, genuine = np.asarray(embeddings, np.float64), np.asarray(signers), np.asarray(genuine, bool)
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("g", "f", "r", "gu", "fu", "ru")}
    for _ in range(draws):
        for u in np.unique(signers):
            g_idx = np.flatnonzero((signers == u) & genuine)
            if len(g_idx) <= n_references:
                raise ValueError(f"signer {u} has {len(g_idx)} genuine signatures; the references protocol "
                                 f"needs more than {n_references} (pass a lower --model.evaluation.n_references, "
                                 "or --n-references to export)")
            refs = rng.choice(g_idx, n_references, replace=False)
            questioned = np.setdiff1d(g_idx, refs)
            skilled = np.flatnonzero((signers == u) & ~genuine)
            pool = np.flatnonzero((signers != u) & genuine)
            rand = rng.choice(pool, min(n_random, len(pool)), replace=False) if len(pool) else pool
            # One call per writer and draw: the references' statistics are computed once.
            parts = (("g", questioned), ("f", skilled), ("r", rand))
            scores = score(embeddings[np.concatenate([idx for _, idx in parts])], embeddings[refs])
            for (key, idx), part in zip(parts, np.split(scores, np.cumsum([len(idx) for _, idx in parts])[:-1])):
                out[key].append(part), out[key + "u"].append(np.full(len(idx), u))
    return Scores(*(np.concatenate(out[k]) for k in ("g", "f", "r", "gu", "fu", "ru")))
