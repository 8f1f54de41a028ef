"""``sigverify test ... --explain N``: maps of the test set's most confident errors, and the distribution
of the ink-attribution ratio over test comparisons, for the report.

Maps explain single comparisons, so errors are read under the pairs protocol (every genuine-genuine
and genuine-skilled pair within a test signer, cosine similarity of the bare network) at the pairs
threshold chosen on this run's validation signers (at the run's ``target_far`` if set), whatever
protocol the report is for; a threshold carried over with ``threshold_from`` is not used here. "Most confident" = farthest from the
threshold on the wrong side: skilled forgeries scored far above it (false accepts) and genuine pairs
far below it (false rejects).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from sigverify.evaluation.protocols import pair_scores
from sigverify.evaluation.report import EvalConfig, choose_threshold
from sigverify.explain.attribution import Explainer
from sigverify.explain.render import save_pair_figure

MOSTLY_BACKGROUND = 0.5  # median ink ratio below this: most positive attribution is off the strokes
NO_LIFT = 1.2  # median ratio / ink share below this: hardly more on ink than a map spread evenly


def within_signer_pairs(signers: np.ndarray, genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index pairs [N, 2], is a genuine pair [N]): genuine-genuine (i < j) and genuine-skilled pairs of each signer."""
    pairs, kinds = [], []
    for u in np.unique(signers):
        g, f = np.flatnonzero((signers == u) & genuine), np.flatnonzero((signers == u) & ~genuine)
        iu = np.triu_indices(len(g), k=1)
        pairs += [np.stack([g[iu[0]], g[iu[1]]], 1), np.stack(np.meshgrid(g, f, indexing="ij"), -1).reshape(-1, 2)]
        kinds += [np.ones(len(iu[0]), bool), np.zeros(len(g) * len(f), bool)]
    return np.concatenate(pairs).astype(int), np.concatenate(kinds)


def confident_errors(similarity: np.ndarray, is_genuine: np.ndarray, threshold: float, n: int) -> np.ndarray:
    """Indices of the ``n`` errors farthest from the threshold (false accepts and false rejects together)."""
    margin = np.where(is_genuine, threshold - similarity, similarity - threshold)
    wrong = np.flatnonzero(np.where(is_genuine, similarity < threshold, similarity >= threshold))
    return wrong[np.argsort(-margin[wrong], kind="stable")][:n]


def _distribution(values: list[float]) -> dict:
    """Summary of ink ratios; maps without positive attribution (NaN) are counted apart."""
    v = np.asarray([x for x in values if np.isfinite(x)])
    out = {"n": int(len(v)), "n_no_positive": int(len(values) - len(v))}
    if not len(v):
        return out
    return {**out, "mean": float(v.mean()), "median": float(np.median(v)), "p10": float(np.quantile(v, 0.1)),
            "p90": float(np.quantile(v, 0.9)), "share_below_half": float((v < 0.5).mean())}


def attribution_warning(median_ratio: float | None, median_share: float | None) -> str | None:
    """The report's warning: attribution mostly off the strokes, or no more on them than an even spread."""
    if median_ratio is None:
        return None
    lift = median_ratio / median_share if median_share else float("inf")
    problems = []
    if median_ratio < MOSTLY_BACKGROUND:
        problems.append(f"attribution sits mostly on background (median ink ratio {median_ratio:.2f})")
    if lift < NO_LIFT:
        problems.append(f"it is hardly more on ink than a map spread evenly ({median_ratio:.2f} against an ink "
                        f"share of {median_share:.2f}: lift {lift:.2f})")
    if not problems:
        return None
    return "; ".join(problems) + ("; check the maps for shortcuts (paper texture, borders, ink darkness) before "
                                  "trusting this model")


def explain_test_errors(network: nn.Module, images: np.ndarray, signers: np.ndarray, genuine: np.ndarray,
                        val: tuple[np.ndarray, np.ndarray, np.ndarray], folder: str | Path, n: int,
                        sample: int = 200, method: str = "gradcam", names=None, seed: int = 0,
                        target_far: float | None = None) -> dict:
    """Maps of the ``n`` most confident test errors into ``folder``, and the ink-ratio distribution over
    up to ``sample`` random test pairs. ``val``: the validation signers' (images, signers, genuine);
    ``target_far``: the run's operating point (None: the validation EER)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    explainer = Explainer(network, images.shape[1], method)
    if not len(val[0]):
        raise ValueError("--explain needs validation signers to fix the pairs threshold on")
    val_embeddings = explainer.embed(val[0]).numpy()
    threshold, source = choose_threshold(pair_scores(val_embeddings, val[1], val[2]),
                                         EvalConfig(protocol="pairs", target_far=target_far))
    embeddings = explainer.embed(images).numpy()
    pairs, is_genuine = within_signer_pairs(signers, genuine)
    similarity = (embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]]).sum(1)
    name = (lambda s: str(names[s])) if names is not None else str

    maps = []
    for rank, k in enumerate(confident_errors(similarity, is_genuine, threshold, n), start=1):
        a, b = pairs[k]
        pair = explainer.pairs(images[a:a + 1], images[b:b + 1])[0]
        kind = "false-reject" if is_genuine[k] else "false-accept"
        what = "genuine pair rejected" if is_genuine[k] else "skilled forgery accepted"
        file = folder / f"error-{rank:02d}-{kind}-signer-{name(signers[a])}.png".replace("/", "_")
        save_pair_figure(pair, images[a], images[b], file,
                         f"{what}: similarity {pair.similarity:.3f}, threshold {threshold:.3f}")
        maps.append({"file": file.name, "kind": kind, "signer": name(signers[a]), **pair.summary()})

    rng = np.random.default_rng(seed)
    picked = rng.choice(len(pairs), min(sample, len(pairs)), replace=False) if len(pairs) else np.zeros(0, int)
    sampled = explainer.pairs(images[pairs[picked, 0]], images[pairs[picked, 1]]) if len(picked) else []
    ratios = [r for p in sampled for r in (p.reference_ink_ratio, p.questioned_ink_ratio)]
    strokes = [r for p in sampled for r in (p.reference_stroke_ratio, p.questioned_stroke_ratio)]
    shares = [s for p in sampled for s in (p.reference_ink_share, p.questioned_ink_share)]
    by_kind = {kind: _distribution([r for p, g in zip(sampled, is_genuine[picked]) if g == want
                                    for r in (p.reference_ink_ratio, p.questioned_ink_ratio)])
               for kind, want in (("genuine_pairs", True), ("forgery_pairs", False))}
    summary = {**explainer.describe(), "network": "the trained embedder (no TTA, no ensemble)",
               "pairs_threshold": float(threshold), "pairs_threshold_source": source,
               "n_errors": int(np.sum(np.where(is_genuine, similarity < threshold, similarity >= threshold))),
               "n_pairs": int(len(pairs)), "maps": maps, "ink_ratio": _distribution(ratios),
               "stroke_ratio": _distribution(strokes),
               "ink_share_median": float(np.median(shares)) if shares else None, "ink_ratio_by_pair": by_kind}
    median, share = summary["ink_ratio"].get("median"), summary["ink_share_median"]
    summary["ink_lift"] = median / share if median is not None and share else None
    summary["warning"] = attribution_warning(median, share)
    _plot_ratios(ratios, share, folder / "ink_ratio.png")
    return summary


def _plot_ratios(ratios: list[float], even: float | None, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sigverify.evaluation.figure import save_figure

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist([r for r in ratios if np.isfinite(r)], bins=20, range=(0, 1), color="tab:blue")
    if even is not None:
        ax.axvline(even, color="gray", linestyle="--", label=f"evenly spread map ({even:.2f})")
    ax.axvline(MOSTLY_BACKGROUND, color="tab:red", linestyle=":", label="half on ink")
    ax.set_xlabel("ink-attribution ratio")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    save_figure(fig, file)
