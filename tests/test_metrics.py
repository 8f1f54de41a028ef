import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sigverify.evaluation.metrics import MetricsError, auc, bootstrap_ci, eer, per_user, rates_at, subset_eer, threshold_at_far
from sigverify.evaluation.protocols import pair_scores, reference_scores, score_against_references


def brute_force_eer(genuine, forgery):
    """min over thresholds of max(FAR, FRR), the discrete EER bound: our interpolated EER lies in [lo, this]."""
    best = 1.0
    for t in np.unique(np.r_[genuine, forgery, np.inf]):
        far, frr = (forgery >= t).mean(), (genuine < t).mean()
        best = min(best, max(far, frr))
    return best


@pytest.mark.parametrize("seed", range(10))
def test_auc_matches_sklearn_and_eer_is_consistent(seed):
    rng = np.random.default_rng(seed)
    genuine, forgery = rng.normal(1, 1, rng.integers(5, 60)), rng.normal(0, 1, rng.integers(5, 60))
    y = np.r_[np.ones(len(genuine)), np.zeros(len(forgery))]
    assert auc(genuine, forgery) == pytest.approx(roc_auc_score(y, np.r_[genuine, forgery]))
    rate, threshold = eer(genuine, forgery)
    assert rate <= brute_force_eer(genuine, forgery) + 1e-12
    far, frr = (forgery >= threshold).mean(), (genuine < threshold).mean()
    assert min(far, frr) - 1 / min(len(genuine), len(forgery)) <= rate <= max(far, frr) + 1e-12


def test_perfect_separation():
    rate, threshold = eer([0.9, 0.8, 0.7], [0.1, 0.2, 0.3])
    assert rate == 0.0 and auc([0.9, 0.8, 0.7], [0.1, 0.2, 0.3]) == 1.0
    r = rates_at(threshold, [0.9, 0.8, 0.7], [0.1, 0.2, 0.3])
    assert r["accuracy"] == 1.0 and r["frr"] == 0.0 and r["far_skilled"] == 0.0


def test_total_overlap_and_ties():
    same = np.full(10, 0.5)
    rate, _ = eer(same, same)
    assert rate == pytest.approx(0.5) and auc(same, same) == 0.5
    rate, _ = eer([0.5, 0.6], [0.6, 0.4])  # one tie across classes
    assert 0.0 < rate <= 0.5


def test_hand_computed_rates_and_confusion():
    r = rates_at(0.5, genuine=[0.9, 0.6, 0.4, 0.3], skilled=[0.7, 0.2, 0.1], random=[0.55, 0.1, 0.0, 0.2])
    assert r["tpr"] == 0.5 and r["frr"] == 0.5 and r["far_skilled"] == pytest.approx(1 / 3)
    assert r["far_random"] == 0.25 and r["confusion"] == [[2, 2], [1, 2]] and r["accuracy"] == pytest.approx(4 / 7)
    assert r["hter"] == pytest.approx((0.5 + 1 / 3) / 2)


def test_no_forgeries_is_a_clear_error():
    with pytest.raises(MetricsError, match="no forgery scores"):
        eer([0.5, 0.6], [])
    with pytest.raises(MetricsError, match="no genuine scores"):
        auc([], [0.5])


def test_threshold_at_far():
    forgery = np.linspace(0, 1, 101)
    t = threshold_at_far(forgery, 0.1)
    assert (forgery >= t).mean() <= 0.1 and (forgery >= np.nextafter(t, -np.inf) - 0.011).mean() > 0.1


def test_per_user_and_single_user():
    genuine, forgery = np.array([0.9, 0.8, 0.3, 0.2]), np.array([0.5, 0.1, 0.15, 0.0])
    out = per_user(genuine, forgery, np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2]))
    assert out["eer_user_threshold"] == 0.0 and out["mean_user_auc"] == 1.0 and out["n_users"] == 2
    assert eer(genuine, forgery)[0] > 0  # one global threshold cannot separate both users
    single = per_user(genuine[:2], forgery[:2], np.array([1, 1]), np.array([1, 1]))
    assert single["n_users"] == 1


def test_subset_eer_is_the_mean_over_every_subset_of_writers():
    rng = np.random.default_rng(3)
    users = np.arange(7)
    g_users, f_users = np.repeat(users, 6), np.repeat(users, 9)
    genuine = rng.normal(1.0, 1.0, len(g_users)) + 0.3 * g_users  # writers differ in scale: subsets differ
    forgery = rng.normal(0.0, 1.0, len(f_users)) + 0.1 * f_users
    expected = []
    for mask in range(2 ** len(users)):  # every subset by bitmask, kept when it has exactly 4 writers
        group = [u for u in users if mask >> u & 1]
        if len(group) == 4:
            expected.append(eer(genuine[np.isin(g_users, group)], forgery[np.isin(f_users, group)])[0])
    got = subset_eer(genuine, forgery, g_users, f_users, size=4)
    assert got["subsets"] == len(expected) == 35 and got["size"] == 4
    assert got["eer_mean"] == pytest.approx(np.mean(expected)) and got["eer_std"] == pytest.approx(np.std(expected))
    assert subset_eer(genuine, forgery, g_users, f_users, size=7)["eer_mean"] == pytest.approx(eer(genuine, forgery)[0])
    with pytest.raises(MetricsError, match="7 users .* a subset needs 8"):
        subset_eer(genuine, forgery, g_users, f_users, size=8)


def test_bootstrap_ci_brackets_the_statistic():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 10)
    values = rng.normal(0, 1, len(users)) + users * 0.1
    lo, hi = bootstrap_ci(lambda us: np.concatenate([values[users == u] for u in us]).mean(), users, n_boot=300)
    assert lo < values.mean() < hi and hi - lo < 2


def random_embeddings(seed, signers=5, genuine=6, forgeries=4, dim=8):
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(signers), genuine + forgeries)
    g = np.tile(np.r_[np.ones(genuine, bool), np.zeros(forgeries, bool)], signers)
    e = rng.normal(size=(len(s), dim))
    return e / np.linalg.norm(e, axis=1, keepdims=True), s, g


@pytest.mark.parametrize("signers, n_g, n_f", [(1, 5, 3), (4, 6, 4), (7, 3, 0)])
def test_pair_protocol_counts(signers, n_g, n_f):
    emb, s, g = random_embeddings(0, signers, n_g, n_f)
    scores = pair_scores(emb, s, g)
    assert len(scores.genuine) == signers * n_g * (n_g - 1) // 2
    assert len(scores.skilled) == signers * n_g * n_f
    assert len(scores.random) == signers * n_g * (signers - 1)
    i, j = 0, 1
    assert scores.genuine[0] == pytest.approx(emb[i] @ emb[j])


@pytest.mark.parametrize("refs, draws, n_random", [(3, 1, 2), (4, 3, 10)])
def test_reference_protocol_counts(refs, draws, n_random):
    signers, n_g, n_f = 5, 6, 4
    emb, s, g = random_embeddings(1, signers, n_g, n_f)
    scores = reference_scores(emb, s, g, n_references=refs, draws=draws, n_random=n_random)
    assert len(scores.genuine) == draws * signers * (n_g - refs)
    assert len(scores.skilled) == draws * signers * n_f
    assert len(scores.random) == draws * signers * min(n_random, (signers - 1) * n_g)
    with pytest.raises(ValueError, match="needs more than 6"):
        reference_scores(emb, s, g, n_references=6)


def unit_rows(rng, n, d=16):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("reduce", ["mean", "max"])
@pytest.mark.parametrize("normalize", ["none", "center", "z"])
def test_reference_score_matches_a_plain_loop(reduce, normalize):
    rng = np.random.default_rng(3)
    questioned, refs = unit_rows(rng, 7), unit_rows(rng, 5)
    mutual = [float(refs[i] @ refs[j]) for i in range(5) for j in range(i + 1, 5)]
    for q, got in zip(questioned, score_against_references(questioned, refs, reduce, normalize)):
        sims = [float(q @ r) for r in refs]
        expected = sum(sims) / len(sims) if reduce == "mean" else max(sims)
        if normalize != "none":
            expected -= sum(mutual) / len(mutual)
        if normalize == "z":
            expected /= max(float(np.std(mutual)), 1e-2)
        assert got == pytest.approx(expected)


def test_reference_normalisation_puts_writers_on_one_scale():
    """A consistent writer (tight cluster) and a variable one (loose cluster), forgeries just outside
    each: no global threshold separates raw scores, the centred scores separate them."""
    rng = np.random.default_rng(0)
    genuine, skilled = [], []
    for spread in (0.05, 0.6):
        centre = unit_rows(rng, 1)[0]

        def around(n, radius):
            x = centre + radius * unit_rows(rng, n)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        refs = around(10, spread)
        for normalize in ("none", "center"):
            genuine.append((normalize, score_against_references(around(20, spread), refs, normalize=normalize)))
            skilled.append((normalize, score_against_references(around(20, spread * 1.6), refs, normalize=normalize)))
    eers = {n: eer(np.concatenate([s for k, s in genuine if k == n]), np.concatenate([s for k, s in skilled if k == n]))[0]
            for n in ("none", "center")}
    assert eers["center"] < eers["none"] - 0.1, eers


def test_reference_options_are_checked():
    from sigverify.evaluation.report import EvalConfig

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="normalize must be one of"):
        score_against_references(unit_rows(rng, 2), unit_rows(rng, 3), normalize="zscore")
    with pytest.raises(ValueError, match="at least 2 references"):
        score_against_references(unit_rows(rng, 2), unit_rows(rng, 1), normalize="center")
    with pytest.raises(ValueError, match="reduce must be one of"):
        EvalConfig(protocol="references", reduce="median")
    for also in (["pairs"], ["triplets"], ["references", "references"]):
        with pytest.raises(ValueError, match="also_protocols"):
            EvalConfig(protocol="pairs", also_protocols=also)
    assert EvalConfig(protocol="pairs", also_protocols=["references"]).also_protocols == ["references"]


def test_threshold_is_fixed_on_validation_and_never_retuned_on_test():
    from sigverify.evaluation.protocols import Scores
    from sigverify.evaluation.report import EvalConfig, choose_threshold, evaluate

    rng = np.random.default_rng(0)

    def scores(shift):
        g, f = rng.normal(0.8 + shift, 0.1, 60), rng.normal(0.5 + shift, 0.1, 60)
        users = np.repeat(np.arange(6), 10)
        return Scores(g, f, f[:12] - 0.2, users, users, users[:12])

    config = EvalConfig(bootstrap=0)
    validation = scores(0.0)
    threshold, source = choose_threshold(validation, config)
    assert source.startswith("validation")
    reports = [evaluate(scores(shift), threshold, source, config) for shift in (0.0, 0.2, -0.2)]
    assert all(r["threshold"] == threshold for r in reports)  # whatever the test scores are
    shifted = reports[1]
    assert abs(shifted["eer_threshold_test"] - threshold) > 0.1  # the test optimum moved; the threshold did not
    assert shifted["frr"] < shifted["far_skilled"]  # and the rates at the fixed threshold show it
    strict = choose_threshold(validation, EvalConfig(target_far=0.01, bootstrap=0))[0]
    assert strict > threshold and (validation.skilled >= strict).mean() <= 0.01
