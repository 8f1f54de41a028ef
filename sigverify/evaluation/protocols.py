"""How test comparisons are formed from embeddings: the ``pairs`` and ``references`` protocols.

Both return a :class:`Scores`: genuine scores (should be accepted), skilled-forgery scores and
random-forgery scores (other signers' genuine), each with the signer it belongs to.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROTOCOLS = ("pairs", "references")


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


def pair_scores(embeddings: np.ndarray, signers: np.ndarray, genuine: np.ndarray) -> Scores:
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
        sim_gg = g @ g.T
        iu = np.triu_indices(len(g), k=1)
        g_scores.append(sim_gg[iu]), g_users.append(np.full(len(iu[0]), u))
        f_scores.append((g @ f.T).ravel()), f_users.append(np.full(len(g) * len(f), u))
        others = np.concatenate([first_genuine[o] for o in users if o != u]) if len(users) > 1 else np.zeros(0, int)
        r = (g @ embeddings[others].T).ravel() if len(others) else np.zeros(0)
        r_scores.append(r), r_users.append(np.full(len(r), u))
    return Scores(*(np.concatenate(x) for x in (g_scores, f_scores, r_scores, g_users, f_users, r_users)))


def reference_scores(embeddings: np.ndarray, signers: np.ndarray, genuine: np.ndarray, n_references: int = 12,
                     draws: int = 5, reduce: str = "mean", n_random: int = 10, seed: int = 0) -> Scores:
    """Enrol ``n_references`` genuine signatures per signer; score each remaining genuine, each skilled
    forgery and ``n_random`` other signers' genuine signatures by their mean (or max) cosine similarity
    to the references. Repeated over ``draws`` random draws of the references (scores pooled).
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be mean or max, got {reduce!r}")
    embeddings, signers, genuine = np.asarray(embeddings, np.float64), np.asarray(signers), np.asarray(genuine, bool)
    rng = np.random.default_rng(seed)
    agg = np.mean if reduce == "mean" else np.max
    out = {k: [] for k in ("g", "f", "r", "gu", "fu", "ru")}
    for _ in range(draws):
        for u in np.unique(signers):
            g_idx = np.flatnonzero((signers == u) & genuine)
            if len(g_idx) <= n_references:
                raise ValueError(f"signer {u} has {len(g_idx)} genuine signatures; the references protocol "
                                 f"needs more than {n_references} (set n_references lower)")
            refs = rng.choice(g_idx, n_references, replace=False)
            questioned = np.setdiff1d(g_idx, refs)
            skilled = np.flatnonzero((signers == u) & ~genuine)
            pool = np.flatnonzero((signers != u) & genuine)
            rand = rng.choice(pool, min(n_random, len(pool)), replace=False) if len(pool) else pool
            for key, idx in (("g", questioned), ("f", skilled), ("r", rand)):
                scores = agg(embeddings[idx] @ embeddings[refs].T, axis=1) if len(idx) else np.zeros(0)
                out[key].append(scores), out[key + "u"].append(np.full(len(idx), u))
    return Scores(*(np.concatenate(out[k]) for k in ("g", "f", "r", "gu", "fu", "ru")))
