"""The shortcut floor (image statistics scored by the model's protocol) and the HTER interval that
also resamples the validation signers."""
import numpy as np
import pytest
import torch

from sigverify.evaluation.metrics import rates_at
from sigverify.evaluation.protocols import Scores, pair_scores
from sigverify.evaluation.report import EvalConfig, choose_threshold, evaluate, render_markdown
from sigverify.evaluation.shortcut import FEATURES, image_statistics, negative_distance, statistics_floor


def loop_statistics(image: np.ndarray) -> list[float]:
    """The statistics of one uint8 image [H, W], one pixel at a time where it matters."""
    x = image.astype(np.float64) / 255
    h, w = x.shape
    ys, xs = np.nonzero(x > 0)
    box_h, box_w = (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) if len(ys) else (0, 0)
    mass = x.sum()
    padded = np.pad(x, 1)
    square = np.array([[padded[i:i + 3, j:j + 3].max() for j in range(w)] for i in range(h)])
    cross = np.array([[max(padded[i + 1, j + 1], padded[i, j + 1], padded[i + 2, j + 1], padded[i + 1, j],
                           padded[i + 1, j + 2]) for j in range(w)] for i in range(h)])
    growth = np.sqrt((square.sum() - mass) * (cross.sum() - mass))
    return [mass / (h * w), mass / max(len(ys), 1), box_h / h, box_w / w, (box_w / w * w) / max(box_h / h * h, 1e-6),
            2 * mass / max(growth, 1e-6)]


@pytest.mark.parametrize("seed", range(4))
def test_image_statistics_match_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    images = np.zeros((3, 12, 20), np.uint8)
    for image in images:
        top, left = rng.integers(0, 6), rng.integers(0, 10)
        image[top:top + rng.integers(2, 6), left:left + rng.integers(2, 10)] = rng.integers(1, 256, (1,))
        image[rng.integers(0, 12), rng.integers(0, 20)] = 255  # a speck far away widens the box
    ours = image_statistics(torch.from_numpy(images)[:, None]).numpy()
    assert ours.shape == (3, len(FEATURES))
    np.testing.assert_allclose(ours, [loop_statistics(im) for im in images], rtol=1e-5)


@pytest.mark.parametrize("width", [2, 3, 5])
@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_stroke_width_of_bars_of_known_width(width, direction):
    image = np.zeros((120, 120), np.uint8)
    if direction == "horizontal":
        image[50:50 + width, 10:110] = 255
    elif direction == "vertical":
        image[10:110, 50:50 + width] = 255
    else:  # a 45-degree band, its width measured across it
        ys, xs = np.mgrid[:120, :120]
        image[(np.abs(ys - xs) * np.sqrt(0.5) < width / 2) & (ys > 10) & (ys < 110)] = 255
    estimate = image_statistics(torch.from_numpy(image)[None, None])[0, FEATURES.index("stroke_width")].item()
    assert estimate == pytest.approx(width, rel=0.25), (direction, width, estimate)


def pages(seed, signers=12, per_kind=6, forgery_ink=1.0):
    """Statistics-like vectors: every signer has its own ink level; forgeries are ``forgery_ink`` times inkier."""
    rng = np.random.default_rng(seed)
    rows, who, real = [], [], []
    for s in range(signers):
        base = rng.normal(0, 1, len(FEATURES))
        for genuine in (True, False):
            for _ in range(per_kind):
                v = base + rng.normal(0, 0.3, len(FEATURES))
                if not genuine:
                    v[0] *= forgery_ink
                    v[0] += 3 * (forgery_ink - 1)
                rows.append(v), who.append(s), real.append(genuine)
    return np.array(rows), np.array(who), np.array(real)


def test_floor_is_low_when_forgeries_differ_in_ink_and_high_when_they_do_not():
    config = EvalConfig(protocol="pairs")
    shortcut = statistics_floor(pages(0, forgery_ink=2.0), pages(1, forgery_ink=2.0), config)
    honest = statistics_floor(pages(0), pages(1), config)
    assert shortcut["eer"] < 0.2 < 0.35 < honest["eer"]
    assert set(shortcut) == {"features", "eer", "hter", "auc", "threshold"} and shortcut["features"] == list(FEATURES)
    refs = statistics_floor(pages(0, forgery_ink=2.0), pages(1, forgery_ink=2.0),
                            EvalConfig(protocol="references", n_references=3, draws=2))
    assert refs["eer"] < 0.2  # the same floor under the references protocol


def test_negative_distance_is_a_similarity():
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(negative_distance(a, a), [[0, -5], [-5, 0]])
    stats, signers, genuine = pages(2)
    by_distance = pair_scores(stats, signers, genuine, negative_distance)
    assert by_distance.genuine.max() <= 0 and len(by_distance.skilled) == 12 * 6 * 6


def scores_of(rng, users, shift, genuine_mean=1.0):
    g_users = np.repeat(users, 20)
    f_users = np.repeat(users, 20)
    offsets = {u: rng.normal(0, shift) for u in users}  # each signer moves all its scores
    g = rng.normal(genuine_mean, 0.5, len(g_users)) + np.array([offsets[u] for u in g_users])
    f = rng.normal(0.0, 0.5, len(f_users)) + np.array([offsets[u] for u in f_users])
    return Scores(g, f, np.zeros(0), g_users, f_users, np.zeros(0, int))


def test_hter_interval_resamples_the_validation_signers_like_a_plain_loop():
    rng = np.random.default_rng(0)
    validation, test = scores_of(rng, np.arange(4), shift=1.0), scores_of(rng, np.arange(10, 30), shift=0.2)
    config = EvalConfig(bootstrap=200, seed=3)
    threshold, source = choose_threshold(validation, config)
    with_val = evaluate(test, threshold, source, config, validation)
    fixed = evaluate(test, threshold, source, config)
    # The specification: redraw validation signers, re-choose the threshold, redraw test signers.
    loop = np.random.default_rng(3)
    values = []
    for _ in range(200):
        t = choose_threshold(validation.subset(loop.choice(np.arange(4), 4)), config)[0]
        sample = test.subset(loop.choice(np.arange(10, 30), 20))
        values.append(rates_at(t, sample.genuine, sample.skilled)["hter"])
    assert with_val["hter_ci95"] == pytest.approx([np.quantile(values, 0.025), np.quantile(values, 0.975)])
    # Four validation signers that disagree: the threshold's own uncertainty widens the interval.
    assert np.diff(with_val["hter_ci95"])[0] > 1.5 * np.diff(fixed["hter_ci95"])[0]
    assert "validation signers" in with_val["hter_ci95_note"] and "held fixed" in fixed["hter_ci95_note"]


def test_report_prints_the_floor_beside_the_model_and_warns_near_it():
    rng = np.random.default_rng(1)
    test = scores_of(rng, np.arange(6), shift=0.1)
    report = evaluate(test, 0.5, "validation signers, at their EER", EvalConfig(bootstrap=0))
    report["image_statistics"] = {"features": list(FEATURES), "eer": report["eer"] + 0.02, "hter": 0.3, "auc": 0.7,
                                  "threshold": -1.0}
    report["image_statistics_eer"] = report["image_statistics"]["eer"]
    text = render_markdown(report)
    assert "Shortcut floor" in text and "Warning" in text
    report["image_statistics"]["eer"] = report["eer"] + 0.2
    assert "Warning" not in render_markdown(report)
