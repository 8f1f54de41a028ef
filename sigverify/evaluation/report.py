"""Test-time evaluation: a threshold fixed on the validation signers, applied unchanged to the test
signers, with skilled and random forgeries apart, per-user figures and signer-bootstrap CIs.

``report.json`` / ``report.md`` and PNG plots (ROC, score histograms with the threshold, confusion
matrix) are written by :func:`write_report`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sigverify.evaluation.likelihood_ratio import METHODS as LR_METHODS
from sigverify.evaluation.likelihood_ratio import LRCalibration, LRMethod, validation_figures
from sigverify.evaluation.metrics import MetricsError, auc, bootstrap_ci, eer, per_user, rates_at, threshold_at_far
from sigverify.evaluation.protocols import (
    PROTOCOLS,
    Normalization,
    Protocol,
    Reduction,
    Scores,
    Similarity,
    check_reference_options,
    cosine,
    pair_scores,
    reference_scores,
)


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class EvalConfig:
    """How test embeddings are scored, thresholded and reported. What embeds them (features, test-time shifts,
    ensembles) is the models' ``InferenceConfig``; the explanation maps are the report writer's."""

    protocol: Protocol = "pairs"
    also_protocols: list[Protocol] = field(default_factory=list)  # tested too, from the same embeddings (a report each)
    n_references: int = 12  # references protocol: genuine signatures enrolled per signer
    draws: int = 5  # references protocol: random draws of the references
    reduce: Reduction = "mean"  # references protocol: mean or max similarity to the references
    normalize: Normalization = "center"  # references protocol: writer normalisation (see score_against_references)
    n_random: int = 10  # references protocol: other signers' genuine signatures per signer
    target_far: float | None = None  # None: threshold at the validation EER; else at this skilled FAR
    bootstrap: int = 1000  # signer resamples for the 95 % CIs (0: none)
    seed: int = 0
    lr_method: LRMethod = "logistic"  # the score-to-likelihood-ratio calibration (likelihood_ratio.py)
    threshold_from: str | None = None  # another run's folder or report.json: its threshold, carried over (cross-dataset)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        for other in self.also_protocols:
            if other not in PROTOCOLS or other == self.protocol or self.also_protocols.count(other) > 1:
                raise ValueError(f"also_protocols must list protocols of {PROTOCOLS} other than protocol "
                                 f"({self.protocol!r}), each once; got {self.also_protocols}")
        check_reference_options(self.reduce, self.normalize)
        if self.lr_method not in LR_METHODS:
            raise ValueError(f"lr_method must be one of {LR_METHODS}, got {self.lr_method!r}")
        # A report that cannot lend its threshold is refused before any work (how the network embeds is checked
        # by the module, which holds those settings).
        if self.threshold_from:
            for protocol in (self.protocol, *self.also_protocols):
                carried_threshold(self, protocol)

    def lr_calibration(self, validation: Scores) -> LRCalibration:
        """The score-to-LR map fitted on validation scores of this protocol; the references protocol scores each
        signature once per draw, and the bounds count each signature once."""
        repeats = self.draws if self.protocol == "references" else 1
        return LRCalibration.fit(validation.genuine, validation.skilled, self.lr_method, repeats)


def protocol_scores(embeddings, signers, genuine, config: EvalConfig, similarity: Similarity = cosine) -> Scores:
    if config.protocol == "pairs":
        return pair_scores(embeddings, signers, genuine, similarity)
    return reference_scores(embeddings, signers, genuine, config.n_references, config.draws, config.reduce,
                            config.n_random, config.seed, config.normalize, similarity)


# Settings that change what a score means: a threshold carries over only between reports that agree on them
# and on how the network embedded (a report's "inference": the models' settings, whatever they are).
SCORE_SETTINGS = ("protocol", "n_references", "reduce", "normalize")


def carried_report(source: str | Path, protocol: str) -> Path:
    """The report whose threshold ``threshold_from`` names for ``protocol``: a run folder (its
    ``test-<protocol>/report.json``) or a report.json (or its sibling of the same stage for another
    protocol, ``test-pairs/`` beside ``test-references/``)."""
    path = Path(source)
    if path.is_dir():
        return path / f"test-{protocol}" / "report.json"
    stage = path.parent.name.rsplit("-", 1)[0]
    sibling = path.parent.parent / f"{stage}-{protocol}" / path.name
    return sibling if path.parent.name != f"{stage}-{protocol}" and sibling.is_file() else path


def carried_threshold(config: EvalConfig, protocol: str | None = None, model_sha256: str | None = None,
                      inference: dict | None = None) -> tuple[float, str]:
    """The threshold of another run's report (``threshold_from``) for ``protocol`` (default: the
    config's): for cross-dataset tests that keep the operating point of the data set the model was
    validated on. With ``model_sha256`` (the network under test), a report of another network is refused;
    with ``inference`` (how it embeds), a report that embedded otherwise."""
    protocol = protocol or config.protocol
    path = carried_report(config.threshold_from, protocol)
    try:
        report = json.loads(path.read_text())
        threshold, theirs = float(report["threshold"]), report["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable report.json with a threshold ({err})") from err
    ours = {**asdict(config), "protocol": protocol}
    differ = [k for k in SCORE_SETTINGS if k in theirs and theirs[k] != ours[k]
              and not (k == "n_references" and protocol == "pairs")]
    if inference:
        ours |= inference
        theirs = {**theirs, **report.get("inference", {})}  # reports before issue #25 kept them in "config"
        differ += [k for k in inference if k in theirs and theirs[k] != inference[k]]
    if differ:
        raise ValueError(f"{path}: its threshold was chosen with other score settings ("
                         + ", ".join(f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in differ) + ")")
    theirs_model = report.get("model_sha256")
    if model_sha256 and theirs_model and theirs_model != model_sha256:
        raise ValueError(f"{path}: its threshold belongs to another network (weights {theirs_model}, this one "
                         f"{model_sha256}); carry a threshold over only from a report of the same checkpoint")
    return threshold, f"carried over from {path} ({report.get('threshold_source', 'validation signers')})"


def choose_threshold(validation: Scores, config: EvalConfig) -> tuple[float, str]:
    """The operating threshold, from validation scores only (this run's, or those of the run named by
    ``threshold_from``)."""
    if config.threshold_from:
        return carried_threshold(config)
    if config.target_far is None:
        return eer(validation.genuine, validation.skilled)[1], "validation signers, at their EER"
    return threshold_at_far(validation.skilled, config.target_far), f"validation signers, at FAR {config.target_far:g}"


def evaluate(test: Scores, threshold: float, threshold_source: str, config: EvalConfig,
             validation: Scores | None = None) -> dict:
    """All test figures at a given (validation-chosen) threshold; never re-tuned here. With the
    ``validation`` scores the threshold came from, the HTER interval also covers their sampling."""
    test_eer, test_eer_threshold = eer(test.genuine, test.skilled)
    at = rates_at(threshold, test.genuine, test.skilled, test.random)
    users = np.unique(np.r_[test.genuine_users, test.skilled_users])
    report = {
        "protocol": config.protocol,
        "eer": test_eer,
        "eer_note": "a-posteriori: EER of the test scores (threshold found on the test set, as in the write-up)",
        "eer_threshold_test": test_eer_threshold,
        "auc": auc(test.genuine, test.skilled),
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "accuracy": at["accuracy"], "tpr": at["tpr"], "fpr": at["fpr"], "frr": at["frr"],
        "far_skilled": at["far_skilled"], "far_random": at["far_random"],
        "hter": at["hter"],
        "confusion": at["confusion"],
        "pos_score": float(np.mean(test.genuine)), "neg_score": float(np.mean(test.skilled)),
        "random_score": float(np.mean(test.random)) if len(test.random) else None,
        "n_signers": int(len(users)), "n_genuine": int(len(test.genuine)), "n_forgery": int(len(test.skilled)),
        "n_random": int(len(test.random)),
        **per_user(test.genuine, test.skilled, test.genuine_users, test.skilled_users),
        "config": asdict(config),
    }
    if validation is not None:  # LRs calibrated on the validation signers, judged on these
        report["likelihood_ratio"] = validation_figures(config.lr_calibration(validation), test.genuine, test.skilled)
    report["eer_ci95"], report["auc_ci95"] = _bootstrap(test, config)
    report["hter_ci95"] = _hter_interval(test, threshold, config, validation)
    report["hter_ci95_note"] = ("signer bootstrap over test signers and over the validation signers the threshold "
                                "is chosen on (re-chosen on every resample)" if validation is not None else
                                "signer bootstrap over test signers (threshold held fixed"
                                + (", carried over)" if config.threshold_from else ")"))
    return report


def _bootstrap(test: Scores, config: EvalConfig):
    """95 % intervals of the threshold-free figures, resampling test signers."""
    if config.bootstrap <= 0:
        return None, None
    users = np.unique(test.genuine_users)
    figures = (lambda s: eer(s.genuine, s.skilled)[0], lambda s: auc(s.genuine, s.skilled))
    return tuple(list(bootstrap_ci(lambda us, f=f: f(test.subset(us)), users, config.bootstrap, config.seed))
                 for f in figures)


def _hter_interval(test: Scores, threshold: float, config: EvalConfig, validation: Scores | None):
    """95 % interval of the HTER a deployment would see. The threshold itself is an estimate from a
    handful of validation signers, so each resample also redraws them and re-chooses the threshold."""
    if config.bootstrap <= 0:
        return None
    if validation is None:
        users = np.unique(test.genuine_users)
        hter = lambda us: rates_at(threshold, *_pair(test.subset(us)))["hter"]  # noqa: E731
        return list(bootstrap_ci(hter, users, config.bootstrap, config.seed))
    rng = np.random.default_rng(config.seed)
    val_users, test_users = np.unique(validation.genuine_users), np.unique(test.genuine_users)
    values = []
    for _ in range(config.bootstrap):
        try:
            resampled_threshold = choose_threshold(validation.subset(rng.choice(val_users, len(val_users))), config)[0]
            sample = test.subset(rng.choice(test_users, len(test_users)))
            values.append(rates_at(resampled_threshold, *_pair(sample))["hter"])
        except MetricsError:  # a resample without forgeries
            continue
    if not values:
        return [float("nan"), float("nan")]
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def _pair(scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    return scores.genuine, scores.skilled


def write_report(report: dict, test: Scores, folder: str | Path) -> Path:
    """report.json, report.md, scores.npz (for ROC overlays), roc.png, scores.png, confusion.png and, with
    likelihood ratios, tippett.png and ece.png into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    (folder / "report.md").write_text(render_markdown(report))
    np.savez(folder / "scores.npz", **{k: getattr(test, k) for k in test.__dataclass_fields__})
    from sigverify.evaluation.plots import plot_confusion, plot_ece, plot_roc, plot_scores, plot_tippett

    plot_roc({report["protocol"]: test}, folder / "roc.png")
    plot_scores(test, report["threshold"], folder / "scores.png")
    plot_confusion(report["confusion"], folder / "confusion.png")
    if "likelihood_ratio" in report:
        calibration = LRCalibration.from_json(report["likelihood_ratio"]["lr_calibration"])
        genuine, skilled = calibration.log10_lr(test.genuine), calibration.log10_lr(test.skilled)
        plot_tippett(genuine, skilled, folder / "tippett.png")
        plot_ece(genuine, skilled, test.genuine, test.skilled, folder / "ece.png")
    return folder / "report.json"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _ci(ci, percent: bool = True) -> str:
    if not ci:
        return ""
    if percent:
        return f" (95 % CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f} %)"
    return f" (95 % CI {ci[0]:.4f}-{ci[1]:.4f})"


def render_markdown(r: dict) -> str:
    return "\n".join([
        f"# Verification report ({r['protocol']} protocol)",
        "",
        f"{r['n_signers']} test signers: {r['n_genuine']} genuine, {r['n_forgery']} skilled-forgery and "
        f"{r['n_random']} random-forgery comparisons.",
        "",
        f"Operating threshold **{r['threshold']:.4f}**, chosen on the {r['threshold_source']}; applied unchanged here.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| HTER at the threshold, (FAR skilled + FRR) / 2 | {_pct(r['hter'])}{_ci(r.get('hter_ci95'))} |",
        f"| FRR (genuine rejected) | {_pct(r['frr'])} |",
        f"| FAR skilled forgeries | {_pct(r['far_skilled'])} |",
        f"| FAR random forgeries | {_pct(r['far_random'])} |",
        f"| accuracy (genuine vs skilled) | {_pct(r['accuracy'])} |",
        f"| TPR / FPR | {_pct(r['tpr'])} / {_pct(r['fpr'])} |",
        f"| EER, a posteriori (threshold {r['eer_threshold_test']:.4f} found on test) | {_pct(r['eer'])}{_ci(r.get('eer_ci95'))} |",
        f"| AUC | {r['auc']:.4f}{_ci(r.get('auc_ci95'), percent=False)} |",
        f"| EER with per-user thresholds | {_pct(r['eer_user_threshold'])} |",
        f"| mean per-user AUC | {r['mean_user_auc']:.4f} |",
        f"| mean genuine / skilled / random score | {r['pos_score']:.4f} / {r['neg_score']:.4f} / "
        f"{_num(r['random_score'])} |",
        "",
        *_likelihood_ratio_lines(r),
        *_floor_lines(r),
        *_explanation_lines(r),
        "CIs: percentile bootstrap over test signers; the HTER's " + r.get("hter_ci95_note", "") + ". "
        f"Confusion (rows actual genuine/forgery, cols accepted/rejected): {r['confusion']}",
        "",
    ])


def _explanation_lines(r: dict) -> list[str]:
    e = r.get("explanations")
    if not e:
        return []
    ink = e["ink_ratio"]
    lines = ["## Explanation maps", "",
             f"{e['method']} maps of `{e['layer']}` ({e['network']}); pairs within test signers at the pairs "
             f"threshold {e['pairs_threshold']:.4f} ({e['pairs_threshold_source']}): {e['n_errors']} errors among "
             f"{e['n_pairs']} pairs. Ink counts within {e['ink_reach_px']} px of a stroke.", ""]
    if ink.get("n"):
        lines.append(f"Ink-attribution ratio over {ink['n']} images of sampled test pairs: median {ink['median']:.2f} "
                     f"(10-90 %: {ink['p10']:.2f}-{ink['p90']:.2f}); a map spread evenly would give "
                     f"{e['ink_share_median']:.2f} (lift {_num(e['ink_lift'])}); on the stroke pixels alone: median "
                     f"{e['stroke_ratio'].get('median', float('nan')):.2f}. {ink['n_no_positive']} map(s) without "
                     "positive attribution left out. Histogram: `explain/ink_ratio.png`.")
    if e.get("warning"):
        lines.append(f"**Warning**: {e['warning']}.")
    lines += ["", "| map | kind | signer | similarity | ink ratio (reference / questioned) |", "|---|---|---|---|---|"]
    ratio = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    lines += [f"| `explain/{m['file']}` | {m['kind']} | {m['signer']} | {m['similarity']:.3f} | "
              f"{ratio(m['reference_ink_ratio'])} / {ratio(m['questioned_ink_ratio'])} |" for m in e["maps"]]
    return lines + [""]


def _likelihood_ratio_lines(r: dict) -> list[str]:
    lr = r.get("likelihood_ratio")
    if not lr:
        return []
    fit = LRCalibration.from_json(lr["lr_calibration"])
    method = "logistic regression" if fit.method == "logistic" else "PAV (isotonic) transform"
    genuine, skilled = fit.comparisons
    return [f"**Likelihood ratios** (genuine vs skilled forgery), calibrated on the validation signers ({method} "
            f"on {genuine} genuine and {skilled} skilled-forgery comparisons; LR reported within "
            f"{fit.range_text()}) and judged here: Cllr **{lr['cllr']:.3f}** bits, "
            f"Cllr-min {lr['cllr_min']:.3f} (discrimination alone; calibration loss {lr['cllr'] - lr['cllr_min']:.3f}); "
            f"misleading evidence: {_pct(lr['misleading_genuine'])} of genuine signatures with LR < 1, "
            f"{_pct(lr['misleading_forgery'])} of forgeries with LR > 1. Plots: `tippett.png`, `ece.png`.", ""]


def _floor_lines(r: dict) -> list[str]:
    floor = r.get("image_statistics")
    if not floor:
        return []
    lines = [f"**Shortcut floor**: image statistics alone ({', '.join(floor['features'])}), scored by the same "
             f"protocol with their own validation threshold, reach EER {_pct(floor['eer'])} (HTER "
             f"{_pct(floor['hter'])}, AUC {floor['auc']:.4f}); this model: EER {_pct(r['eer'])}, HTER {_pct(r['hter'])}."]
    if r["eer"] > floor["eer"] - 0.05:
        lines.append("**Warning**: the model's EER is within 5 points of the floor's: it may have learned a "
                     "shortcut (ink amount, darkness, size) rather than the signature's form.")
    return lines + [""]
