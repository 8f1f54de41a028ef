"""Likelihood ratios: calibration and its validation metrics against cases whose answer is known analytically.

The reference model: scores that are themselves natural-log LRs. If genuine scores follow N(+mu, 2 mu) and
forgery scores N(-mu, 2 mu), the log ratio of the two densities at s is exactly s, so the scores are perfectly
calibrated LRs; their misleading-evidence rates are Phi(-sqrt(mu / 2)) and their Cllr an integral over one
normal density.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import integrate, stats

from sigverify.evaluation.likelihood_ratio import SCALE, LRCalibration, cllr, cllr_min, ece, misleading_rates, pav_log10_lr, tippett, verbal

LN10 = np.log(10.0)


def calibrated_scores(mu: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = np.sqrt(2 * mu)
    return rng.normal(mu, sd, n), rng.normal(-mu, sd, n)


def analytic_cllr(mu: float) -> float:
    """Cllr of perfectly calibrated normal LLRs: both classes contribute alike, E[log2(1 + e^-s)], s ~ N(mu, 2 mu)."""
    density = stats.norm(mu, np.sqrt(2 * mu)).pdf
    return integrate.quad(lambda s: density(s) * np.logaddexp(0, -s) / np.log(2), -60, 60)[0]


def test_cllr_of_calibrated_scores_matches_the_integral_and_neutral_lrs_cost_one_bit():
    genuine, forged = calibrated_scores(mu=2.0, n=200_000)
    assert cllr(genuine / LN10, forged / LN10) == pytest.approx(analytic_cllr(2.0), abs=0.005)
    assert cllr(np.zeros(10), np.zeros(7)) == pytest.approx(1.0)  # LR = 1 always: no information
    wrong_way = expected_log2(2.0, lambda s: np.logaddexp(0, np.abs(s)))  # |s| for genuine, -|s| for forgeries
    assert cllr(-np.abs(genuine) / LN10, np.abs(forged) / LN10) == pytest.approx(wrong_way, abs=0.01)
    assert wrong_way > 1.0  # LRs pointing the wrong way cost more than saying nothing


def expected_log2(mu: float, f) -> float:
    """E[f(s)] / ln 2 for s ~ N(mu, 2 mu), the genuine scores of the reference model."""
    density = stats.norm(mu, np.sqrt(2 * mu)).pdf
    return integrate.quad(lambda s: density(s) * f(s) / np.log(2), -80, 80)[0]


def test_cllr_of_overconfident_scores_matches_its_integral():
    """Scores three times too sure of themselves (3 s taken as the ln LR): each class costs E[log2(1 + e^-3s)]."""
    genuine, forged = calibrated_scores(mu=1.5, n=200_000, seed=5)
    expected = expected_log2(1.5, lambda s: np.logaddexp(0, -3 * s))
    assert cllr(3 * genuine / LN10, 3 * forged / LN10) == pytest.approx(expected, abs=0.01)
    assert expected > analytic_cllr(1.5) + 0.1  # the same discrimination, miscalibrated, costs more


@pytest.mark.parametrize("prior_log10_odds", [-1.0, 0.7, 2.0])
def test_ece_at_any_prior_odds_matches_its_integral(prior_log10_odds):
    """ECE(o) = P(Hg) E_g[log2(1 + 1/(LR 10^o))] + P(Hf) E_f[log2(1 + LR 10^o)]; the forgery scores mirror the
    genuine ones (s_f = -s_g), so both expectations are over the genuine density."""
    genuine, forged = calibrated_scores(mu=2.0, n=200_000, seed=6)
    shift = prior_log10_odds * LN10
    p_genuine = 1 / (1 + 10 ** -prior_log10_odds)
    expected = (p_genuine * expected_log2(2.0, lambda s: np.logaddexp(0, -(s + shift)))
                + (1 - p_genuine) * expected_log2(2.0, lambda s: np.logaddexp(0, -s + shift)))
    got = ece(genuine / LN10, forged / LN10, np.array([prior_log10_odds]))[0]
    assert got == pytest.approx(expected, abs=0.005)


def test_a_pav_calibration_is_plain_json_and_reports_the_same_lrs():
    """PAV's one-class ends are infinite; stored at the bounds they are reported at anyway (no Infinity in JSON)."""
    rng = np.random.default_rng(7)
    genuine, forged = rng.normal(1, 1, 50), rng.normal(-1, 1, 50)
    fitted = LRCalibration.fit(genuine, forged, method="pav")
    text = json.dumps(fitted.to_json(), allow_nan=False)  # raises on inf or nan
    knots, raw = pav_log10_lr(genuine, forged)
    assert np.isinf(raw).any()  # the case at hand: both ends hold one class
    probe = np.linspace(-4, 4, 200)
    index = np.clip(np.searchsorted(knots, probe, side="right") - 1, 0, len(knots) - 1)
    np.testing.assert_allclose(LRCalibration.from_json(json.loads(text)).log10_lr(probe),
                               np.clip(raw[index], *fitted.bounds))


def test_misleading_evidence_rates_match_the_normal_tail():
    genuine, forged = calibrated_scores(mu=2.0, n=200_000, seed=1)
    rates = misleading_rates(genuine / LN10, forged / LN10)
    expected = stats.norm.cdf(-np.sqrt(2.0 / 2))  # P(s < 0) for s ~ N(2, 4)
    assert rates["misleading_genuine"] == pytest.approx(expected, abs=0.005)
    assert rates["misleading_forgery"] == pytest.approx(expected, abs=0.005)


def test_logistic_calibration_recovers_calibrated_scores_and_fixes_overconfident_ones():
    genuine, forged = calibrated_scores(mu=1.5, n=50_000, seed=2)
    fitted = LRCalibration.fit(genuine, forged)  # the scores already are ln LR: slope 1, intercept 0
    assert fitted.slope == pytest.approx(1.0, abs=0.03) and fitted.intercept == pytest.approx(0.0, abs=0.03)
    overconfident = LRCalibration.fit(3 * genuine, 3 * forged)  # scores three times too sure of themselves
    assert overconfident.slope == pytest.approx(1 / 3, abs=0.01)
    raw = cllr(3 * genuine / LN10, 3 * forged / LN10)
    calibrated = cllr(overconfident.log10_lr(3 * genuine), overconfident.log10_lr(3 * forged))
    assert calibrated < raw and calibrated == pytest.approx(analytic_cllr(1.5), abs=0.01)


def test_cllr_min_is_the_discrimination_alone():
    genuine, forged = calibrated_scores(mu=1.5, n=20_000, seed=3)
    base = cllr_min(genuine, forged)
    assert base == pytest.approx(cllr_min(3 * genuine + 7, 3 * forged + 7), abs=1e-12)  # any monotone map
    assert base <= cllr(genuine / LN10, forged / LN10) + 1e-9  # never above a calibrated system's Cllr
    assert base == pytest.approx(analytic_cllr(1.5), abs=0.02)
    assert cllr_min(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0  # separated classes cost nothing


def test_pav_is_the_plain_pool_adjacent_violators_loop():
    rng = np.random.default_rng(4)
    genuine, forged = rng.normal(1, 1, 40), rng.normal(0, 1, 60)
    knots, log10 = pav_log10_lr(genuine, forged)
    # The specification: sort by score; each point's value is its class (1 genuine, 0 forgery), weighted so
    # both classes weigh the same; merge adjacent blocks while a block's mean exceeds the next one's.
    order = np.argsort(np.r_[genuine, forged], kind="stable")
    labels = np.r_[np.ones(40), np.zeros(60)][order]
    weights = np.r_[np.full(40, 1 / 40), np.full(60, 1 / 60)][order]
    blocks = []  # [weighted sum, weight, count]
    for y, w in zip(labels, weights):
        blocks.append([y * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2] + last[2]]
    posterior = np.repeat([b[0] / b[1] for b in blocks], [b[2] for b in blocks])
    scores = np.r_[genuine, forged][order]
    with np.errstate(divide="ignore"):
        expected = np.log10(posterior) - np.log10(1 - posterior)
    np.testing.assert_allclose(log10[np.searchsorted(knots, scores)], expected, atol=1e-9)


def test_ece_at_even_prior_odds_is_the_cllr():
    genuine, forged = calibrated_scores(mu=1.0, n=5_000, seed=5)
    curve = ece(genuine / LN10, forged / LN10, np.array([-2.0, 0.0, 2.0]))
    assert curve[1] == pytest.approx(cllr(genuine / LN10, forged / LN10), abs=1e-12)
    neutral = ece(np.zeros(3), np.zeros(3), np.array([-2.0, 0.0, 2.0]))  # the prior's own entropy
    p = 1 / (1 + 10.0 ** -np.array([-2.0, 0.0, 2.0]))
    np.testing.assert_allclose(neutral, -(p * np.log2(p) + (1 - p) * np.log2(1 - p)), atol=1e-12)


def test_the_lr_is_bounded_by_the_evidence_behind_the_fit_and_said_in_words():
    rng = np.random.default_rng(6)
    fitted = LRCalibration.fit(rng.normal(2, 0.3, 10), rng.normal(-2, 0.3, 100))  # nearly separable
    assert fitted.bounds == (-1.0, 2.0)  # 1/10 <= LR <= 100
    high, low = fitted.evidence(10.0), fitted.evidence(-10.0)
    assert high["lr"] == pytest.approx(100.0) and high["at_bound"] and low["lr"] == pytest.approx(0.1)
    assert "moderate support for the proposition that the questioned signature is genuine" in high["verbal"]
    assert "weak support for the proposition that it is a skilled forgery" in low["verbal"]
    assert verbal(5_000) .startswith("strong support") and verbal(1 / 2_000_000).startswith("extremely strong")
    # ENFSI's table: 1 no support, 2-10 weak, 10-100 moderate; between 1/2 and 2 no support either way
    for lr in (1.0, 1.5, 1 / 1.9):
        assert verbal(lr) == "no support for either proposition", lr
    assert [verbal(lr).split(" for ")[0] for lr in (2.0, 10.0, 10.5, 1 / 10.5)] == [
        "weak support", "weak support", "moderate support", "moderate support"]
    assert high["scale"] == SCALE and "ENFSI" in SCALE
    # The references protocol scores every validation signature once per draw: the bounds count it once.
    drawn = LRCalibration.fit(np.tile(rng.normal(2, 0.3, 10), 5), np.tile(rng.normal(-2, 0.3, 100), 5), repeats=5)
    assert drawn.bounds == (-1.0, 2.0) and LRCalibration.from_json(drawn.to_json()).bounds == (-1.0, 2.0)
    again = LRCalibration.from_json(fitted.to_json())
    assert again.evidence(0.3) == fitted.evidence(0.3)
    pav = LRCalibration.fit(rng.normal(1, 1, 50), rng.normal(0, 1, 50), method="pav")
    assert np.all(np.diff(pav.log10_lr(np.linspace(-3, 4, 50))) >= 0)  # monotone in the score


def test_the_tippett_curve_is_the_share_at_or_above_each_level():
    values = np.array([0.5, -1.0, 0.5, 2.0, -3.0, 0.5])
    levels, share = tippett(values)
    assert list(levels) == sorted(set(values))
    np.testing.assert_allclose(share, [np.mean(values >= level) for level in levels])  # the plain definition


def test_sigverify_test_reports_calibrated_lrs_with_their_plots(served_model):
    """Through `sigverify test` (the session's served run): the LR calibration is fitted on the validation
    signers' scores and judged on the test signers'; the report carries its Cllr and plots."""
    report_folder = served_model[1] / "test-references"
    report = json.loads((report_folder / "report.json").read_text())
    lr = report["likelihood_ratio"]
    scores = np.load(report_folder / "scores.npz")
    calibration = LRCalibration.from_json(lr["lr_calibration"])
    assert lr["cllr"] == pytest.approx(cllr(calibration.log10_lr(scores["genuine"]), calibration.log10_lr(scores["skilled"])))
    assert lr["cllr_min"] == pytest.approx(cllr_min(scores["genuine"], scores["skilled"]))
    assert 0 <= lr["cllr_min"] <= lr["cllr"] + 1e-9 and lr["lr_calibration"]["n_genuine"] > 0
    genuine_lr, skilled_lr = calibration.log10_lr(scores["genuine"]), calibration.log10_lr(scores["skilled"])
    assert lr["misleading_genuine"] == np.mean(genuine_lr < 0) and lr["misleading_forgery"] == np.mean(skilled_lr > 0)
    # Fitted on the validation signers: export fits the same map on their scores, and on nothing else.
    exported = json.loads((served_model[3] / "calibration.json").read_text())["likelihood_ratio"]
    assert exported == lr["lr_calibration"] and exported["n_genuine"] != report["n_genuine"]
    assert exported["repeats"] == report["config"]["draws"]
    assert (report_folder / "tippett.png").stat().st_size > 0 and (report_folder / "ece.png").stat().st_size > 0
    text = (report_folder / "report.md").read_text()
    assert f"Cllr **{lr['cllr']:.3f}**" in text
    # the bounds quoted are those the LRs are clipped to: comparisons, each validation signature counted once
    low, high = calibration.bounds
    assert f"within 1/{10 ** -low:,.0f} to {10 ** high:,.0f})" in text and calibration.repeats > 1
    assert f"{calibration.n_genuine // calibration.repeats} genuine and" in text


def test_a_verdicts_lr_note_names_every_qualifier():
    """Uncalibrated, capped at a bound and beyond every validation score at once: all three are said."""
    from sigverify.serving.verifier import Verdict

    fitted = LRCalibration.fit(np.r_[0.8, 0.9, 0.95], np.r_[0.1, 0.2, 0.3, 0.4])
    verdict = dict(similarities=[0.99], score=0.99, distance=0.01, threshold=0.5, genuine=True, confidence=1.0,
                   far_at_score=0.0, frr_at_score=1.0, n_references=2, n_references_validated=3)
    capped = Verdict(**verdict, evidence={**fitted.evidence(5.0), "beyond_validation_scores": True})
    note = capped.likelihood_ratio_json()["note"]
    assert note.startswith("uncalibrated: the LR calibration holds for 3 references, not 2") and "at the bound" in note
    assert "extrapolated" in note
    inside = {**fitted.evidence(0.6), "beyond_validation_scores": False}
    beyond = {**inside, "beyond_validation_scores": True}
    assert Verdict(**{**verdict, "n_references": 3}, evidence=inside).likelihood_ratio_json()["note"] is None
    assert "extrapolated" in Verdict(**{**verdict, "n_references": 3}, evidence=beyond).likelihood_ratio_json()["note"]
