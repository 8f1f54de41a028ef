"""Likelihood ratios from verification scores, and how well they are calibrated (forensic evaluative reporting).

A score says which way a comparison leans; a likelihood ratio says how strongly the observation supports
one proposition over the other:

    LR = p(score | Hg: the questioned signature is genuine) / p(score | Hf: it is a skilled forgery)

- **Calibration** maps scores to LRs and is fitted on validation signers only (never on the signers it is
  judged on). ``logistic``: the natural log LR is linear in the score, fitted by logistic regression with
  both classes weighted equally (the standard of forensic speaker and handwriting systems, Brümmer's FoCal);
  ``pav``: the pool-adjacent-violators (isotonic) transform, a monotone step function.
- **Bounds** (the evidence behind an LR): with n genuine and m skilled-forgery validation comparisons, no LR
  is reported above m or below 1/n. An LR of 1,000 claims forgeries reach the score a thousand times less often
  than genuine signatures; fewer than a thousand forgery comparisons cannot show that. Comparisons are
  counted once: the references protocol scores each validation signature once per random draw of the
  references (``repeats``), and those repeats are not more evidence. (A plain sample-size rule; Vergeer et
  al.'s ELUB bounds, which also look at the scores, are tighter or equal.)
- **Validation** (Brümmer & du Preez 2006; Ramos & González-Rodríguez 2013; Meuwly, Ramos & Haraksim 2017):
  ``cllr`` (the log-likelihood-ratio cost, 0 perfect, 1 an uninformative LR of 1 every time), ``cllr_min``
  (the Cllr after the best monotone calibration of the same scores: what discrimination alone allows; the
  difference is the calibration loss), the rates of misleading evidence, the Tippett plot (the share of each
  class whose log10 LR is at or above each value) and the empirical cross-entropy (ECE) over prior odds.
- **Verbal scale**: the ENFSI Guideline for Evaluative Reporting in Forensic Science (2015) equivalents. Its
  table starts at "1: no support" and "2-10: weak support"; an LR between 1/2 and 2 is reported as no support.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

LRMethod = Literal["logistic", "pav"]
METHODS = get_args(LRMethod)
# ENFSI (2015): the upper end of each band of LR values and its verbal equivalent.
SCALE = "ENFSI Guideline for Evaluative Reporting in Forensic Science (2015)"
VERBAL_SCALE = ((2.0, "no support for either proposition"), (10.0, "weak support"), (100.0, "moderate support"),
                (1_000.0, "moderately strong support"), (10_000.0, "strong support"),
                (1_000_000.0, "very strong support"), (np.inf, "extremely strong support"))
PROPOSITIONS = ("the questioned signature is genuine", "it is a skilled forgery of the signer's signature")


def verbal(lr: float) -> str:
    """The ENFSI verbal equivalent of an LR, naming the proposition it supports."""
    strength = lr if lr >= 1 else 1.0 / lr
    if strength < VERBAL_SCALE[0][0]:
        return VERBAL_SCALE[0][1]
    words = next(text for upper, text in VERBAL_SCALE[1:] if strength <= upper)
    favoured, other = PROPOSITIONS if lr > 1 else PROPOSITIONS[::-1]
    return f"{words} for the proposition that {favoured}, rather than that {other}"


@dataclass(frozen=True)
class LRCalibration:
    """A fitted score-to-LR map: log10 LR at any score, within the bounds the validation data support."""

    method: str
    n_genuine: int  # validation scores it was fitted on
    n_skilled: int
    repeats: int = 1  # scores per validation signature (the references protocol's draws): the bounds count each once
    slope: float = 0.0  # logistic: ln LR = slope * score + intercept
    intercept: float = 0.0
    knots: list[float] = field(default_factory=list)  # pav: scores and their log10 LR (step function)
    knot_log10_lr: list[float] = field(default_factory=list)

    @property
    def bounds(self) -> tuple[float, float]:
        """(lowest, highest) log10 LR the validation data support: 1 / genuine and skilled comparisons."""
        return -float(np.log10(self.n_genuine / self.repeats)), float(np.log10(self.n_skilled / self.repeats))

    @property
    def comparisons(self) -> tuple[int, int]:
        """The genuine and skilled-forgery validation comparisons behind the fit, each signature counted once."""
        return round(self.n_genuine / self.repeats), round(self.n_skilled / self.repeats)

    def range_text(self) -> str:
        """The bounds as a reader sees them, e.g. "1/98 to 168"."""
        low, high = (10.0 ** b for b in self.bounds)
        return f"1/{1 / low:,.0f} to {high:,.0f}"

    @classmethod
    def fit(cls, genuine, skilled, method: str = "logistic", repeats: int = 1) -> "LRCalibration":
        """Fitted on validation scores; ``repeats``: how many scores each validation signature has (the
        references protocol's draws), so that the bounds count comparisons, not scores."""
        genuine, skilled = np.asarray(genuine, float).ravel(), np.asarray(skilled, float).ravel()
        if method not in METHODS:
            raise ValueError(f"LR calibration method must be one of {METHODS}, got {method!r}")
        if len(genuine) < 2 or len(skilled) < 2:
            raise ValueError("an LR calibration needs at least 2 genuine and 2 skilled-forgery validation scores")
        if method == "logistic":
            slope, intercept = _balanced_logistic(genuine, skilled)
            return cls(method, len(genuine), len(skilled), repeats, slope=slope, intercept=intercept)
        knots, log10_lr = pav_log10_lr(genuine, skilled)
        fitted = cls(method, len(genuine), len(skilled), repeats, knots=list(knots))
        # A step holding one class alone is infinite; it is reported at the bound anyway, and kept there so the
        # calibration stays plain JSON (no Infinity).
        return cls(method, len(genuine), len(skilled), repeats, knots=[float(k) for k in knots],
                   knot_log10_lr=[float(v) for v in np.clip(log10_lr, *fitted.bounds)])

    def log10_lr(self, scores) -> np.ndarray:
        """log10 LR of each score, clipped to :attr:`bounds`."""
        scores = np.asarray(scores, float)
        if self.method == "logistic":
            raw = (self.slope * scores + self.intercept) / np.log(10.0)
        else:  # the step of the highest knot at or below each score (below the lowest: the lowest step)
            index = np.clip(np.searchsorted(np.asarray(self.knots), scores, side="right") - 1, 0, len(self.knots) - 1)
            raw = np.asarray(self.knot_log10_lr)[index]
        low, high = self.bounds
        return np.clip(raw, low, high)

    def evidence(self, score: float) -> dict:
        """What a report says about one score: the LR, its log10, the verbal equivalent, and whether it
        sits at a bound (the data support no stronger statement)."""
        log10 = float(self.log10_lr(score))
        low, high = self.bounds
        return {"lr": float(10.0 ** log10), "log10_lr": log10, "verbal": verbal(10.0 ** log10), "scale": SCALE,
                "at_bound": bool(np.isclose(log10, low) or np.isclose(log10, high)),
                "bounds_log10": [low, high]}

    def to_json(self) -> dict:
        return {"method": self.method, "n_genuine": self.n_genuine, "n_skilled": self.n_skilled, "repeats": self.repeats,
                "slope": self.slope, "intercept": self.intercept, "knots": self.knots,
                "knot_log10_lr": self.knot_log10_lr,
                "bounds_rule": "repeats/n_genuine <= LR <= n_skilled/repeats (validation comparisons behind the fit, "
                               "each validation signature counted once)",
                "propositions": {"numerator": PROPOSITIONS[0], "denominator": PROPOSITIONS[1]}}

    @classmethod
    def from_json(cls, value: dict) -> "LRCalibration":
        return cls(value["method"], int(value["n_genuine"]), int(value["n_skilled"]), int(value.get("repeats", 1)),
                   float(value.get("slope", 0.0)), float(value.get("intercept", 0.0)), list(value.get("knots", [])),
                   list(value.get("knot_log10_lr", [])))


def _balanced_logistic(genuine: np.ndarray, skilled: np.ndarray) -> tuple[float, float]:
    """Logistic regression of the class on the score, each class weighing half: its log-odds at equal priors
    is the natural log LR. Unregularised (a score scale has no natural penalty)."""
    from sklearn.linear_model import LogisticRegression

    scores = np.r_[genuine, skilled]
    # Standardised for the solver (a barely trained network's scores may span 1e-6), then mapped back.
    centre, scale = float(scores.mean()), float(scores.std()) or 1.0
    labels = np.r_[np.ones(len(genuine)), np.zeros(len(skilled))]
    weights = np.r_[np.full(len(genuine), 0.5 / len(genuine)), np.full(len(skilled), 0.5 / len(skilled))]
    model = LogisticRegression(C=np.inf, max_iter=1000).fit(((scores - centre) / scale)[:, None], labels,
                                                             sample_weight=weights * len(labels))
    slope = float(model.coef_[0, 0]) / scale
    return slope, float(model.intercept_[0]) - slope * centre


def pav_log10_lr(genuine, skilled) -> tuple[np.ndarray, np.ndarray]:
    """The PAV transform: the monotone (non-decreasing in the score) map to posterior probabilities at equal
    class weights, as log10 LR at each distinct score (sorted). Infinite where a score range holds one class."""
    from sklearn.isotonic import IsotonicRegression

    genuine, skilled = np.asarray(genuine, float), np.asarray(skilled, float)
    scores = np.r_[genuine, skilled]
    labels = np.r_[np.ones(len(genuine)), np.zeros(len(skilled))]
    weights = np.r_[np.full(len(genuine), 1.0 / len(genuine)), np.full(len(skilled), 1.0 / len(skilled))]
    posterior = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit(scores, labels, sample_weight=weights)
    knots = np.unique(scores)
    p = posterior.predict(knots)
    with np.errstate(divide="ignore"):
        return knots, np.log10(p) - np.log10(1.0 - p)


def cllr(genuine_log10_lr, skilled_log10_lr) -> float:
    """The log-likelihood-ratio cost, in bits: 1/2 [mean over genuine of log2(1 + 1/LR) + mean over forgeries
    of log2(1 + LR)]. 0 for perfect LRs, 1 for an LR of 1 every time; above 1 the LRs mislead."""
    g, s = np.asarray(genuine_log10_lr, float), np.asarray(skilled_log10_lr, float)
    return float(0.5 * (np.mean(_log2_one_plus_ten_to(-g)) + np.mean(_log2_one_plus_ten_to(s))))


def cllr_min(genuine_scores, skilled_scores) -> float:
    """Cllr of the best monotone calibration of these very scores (PAV fitted on them): the cost of the
    discrimination alone. ``cllr - cllr_min`` is what calibration loses."""
    knots, log10 = pav_log10_lr(genuine_scores, skilled_scores)
    at = lambda s: log10[np.searchsorted(knots, np.asarray(s, float))]  # noqa: E731 (every score is a knot)
    return cllr(at(genuine_scores), at(skilled_scores))


def misleading_rates(genuine_log10_lr, skilled_log10_lr) -> dict:
    """The share of genuine signatures whose LR favours forgery (LR < 1), and of forgeries whose LR favours
    genuineness (LR > 1): evidence pointing the wrong way."""
    return {"misleading_genuine": float(np.mean(np.asarray(genuine_log10_lr) < 0)),
            "misleading_forgery": float(np.mean(np.asarray(skilled_log10_lr) > 0))}


def tippett(log10_lr) -> tuple[np.ndarray, np.ndarray]:
    """The Tippett curve of one class: each distinct log10 LR and the share of the class at or above it (the
    share is constant between one level and the next, up to and including the next)."""
    values = np.sort(np.asarray(log10_lr, float))
    levels = np.unique(values)
    return levels, 1.0 - np.searchsorted(values, levels, side="left") / len(values)


def ece(genuine_log10_lr, skilled_log10_lr, prior_log10_odds: np.ndarray) -> np.ndarray:
    """Empirical cross-entropy (bits) at each prior log10 odds of genuineness: the information still missing
    after the LRs, for a decision maker holding those prior odds."""
    g, s = np.asarray(genuine_log10_lr, float), np.asarray(skilled_log10_lr, float)
    odds = np.asarray(prior_log10_odds, float)
    p_genuine = 1.0 / (1.0 + 10.0 ** -odds)
    return np.array([pg * np.mean(_log2_one_plus_ten_to(-(g + o))) + (1 - pg) * np.mean(_log2_one_plus_ten_to(s + o))
                     for pg, o in zip(p_genuine, odds)])


def _log2_one_plus_ten_to(x: np.ndarray) -> np.ndarray:
    """log2(1 + 10^x), without overflow for large x (and 0 for x = -inf)."""
    x = np.asarray(x, float) * np.log(10.0)
    return np.logaddexp(0.0, x) / np.log(2.0)


def validation_figures(calibration: LRCalibration, genuine_scores, skilled_scores) -> dict:
    """The LR figures of a report: the calibration (fitted on validation signers) applied to these scores."""
    g, s = calibration.log10_lr(genuine_scores), calibration.log10_lr(skilled_scores)
    return {"cllr": cllr(g, s), "cllr_min": cllr_min(genuine_scores, skilled_scores), **misleading_rates(g, s),
            "lr_calibration": calibration.to_json(),
            "log10_lr_range": [float(min(g.min(), s.min())), float(max(g.max(), s.max()))]}
