"""Every loss against a plain per-anchor loop (the specification), on random PKFM-like batches."""
import math

import pytest
import torch
import torch.nn.functional as F

from sigverify.labels import SignatureLabels
from sigverify.losses import LOSSES, create_loss


def random_batch(seed: int, p=4, k=3, f=2, m=2, dim=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    signers, genuine = [], []
    for s in range(p):
        signers += [s] * (k + f) + list(torch.randint(p, p + 6, (m,), generator=g).tolist())
        genuine += [True] * k + [False] * f + [True] * m
    emb = F.normalize(torch.randn(len(signers), dim, generator=g, dtype=dtype), dim=1)
    return emb.requires_grad_(), SignatureLabels(torch.tensor(signers), torch.tensor(genuine))


def roles(labels, i):
    """Positives and negatives of anchor i by the rules, read one pair at a time."""
    s, gen = labels.signer.tolist(), labels.genuine.tolist()
    if not gen[i]:
        return [], []
    pos = [j for j in range(len(s)) if j != i and gen[j] and s[j] == s[i]]
    neg = [j for j in range(len(s)) if s[j] != s[i] or not gen[j]]
    return pos, neg


def dist(e, i, j):
    return torch.sqrt(torch.clamp(2 - 2 * (e[i] @ e[j]), min=1e-12))


def mined_similarity(e, i, candidates, strategy, role):
    """The similarity of the pair a strategy picks, by its definition: a hard positive is the least similar,
    a hard negative the most similar; easy is the opposite."""
    pick = min if (strategy == "hard") == (role == "positive") else max
    return pick((e[i] @ e[j] for j in candidates), key=lambda v: v.item())


def ref_triplet_hard(e, labels, margin=0.5, positives="hard", negatives="hard"):
    losses = []
    for i in range(len(e)):
        pos, neg = roles(labels, i)
        if pos and neg:
            s_ap = mined_similarity(e, i, pos, positives, "positive")
            s_an = mined_similarity(e, i, neg, negatives, "negative")
            d_ap, d_an = (torch.sqrt(torch.clamp(2 - 2 * v, min=1e-12)) for v in (s_ap, s_an))
            losses.append(torch.relu(d_ap - d_an + margin))
    return torch.stack(losses).mean()


def ref_triplet_semihard(e, labels, margin=0.5, fallback="hardest"):
    losses = []
    for i in range(len(e)):
        pos, neg = roles(labels, i)
        if not (pos and neg):
            continue
        for j in pos:
            d_ap = dist(e, i, j)
            band = [n for n in neg if d_ap.item() < dist(e, i, n).item() < d_ap.item() + margin]
            if not band and fallback == "hardest":
                band = [min(neg, key=lambda n: dist(e, i, n).item())]
            losses += [torch.relu(d_ap - dist(e, i, n) + margin) for n in band]
    return torch.stack(losses).mean()


def ref_sct(e, labels, lam=1.0, t=0.1, hard_threshold=0.8, mu=0.0, margin=0.5, positives="easy", negatives="hard",
            pull_positives="easy"):
    losses, pulls = [], []
    for i in range(len(e)):
        pos, neg = roles(labels, i)
        if not (pos and neg):
            continue
        s_ap = mined_similarity(e, i, pos, positives, "positive")
        s_an = mined_similarity(e, i, neg, negatives, "negative")
        hard = s_an.item() > s_ap.item() or (hard_threshold is not None and s_an.item() > hard_threshold)
        if hard:
            losses.append(lam * s_an)
        else:
            losses.append(-torch.log(torch.exp(s_ap / t) / (torch.exp(s_ap / t) + torch.exp(s_an / t))))
        if pull_positives == "all":
            pulls.append(torch.stack([torch.relu(margin - e[i] @ e[j]) for j in pos]).mean())
        else:
            pulls.append(torch.relu(margin - mined_similarity(e, i, pos, pull_positives, "positive")))
    return torch.stack(losses).sum() / len(losses) + mu * torch.stack(pulls).mean()


def ref_supcon(e, labels, t=0.1):
    losses = []
    for i in range(len(e)):
        pos, neg = roles(labels, i)
        if not (pos and neg):
            continue
        others = [j for j in range(len(e)) if j != i]
        denom = torch.logsumexp(torch.stack([e[i] @ e[j] / t for j in others]), 0)
        losses.append(-torch.stack([e[i] @ e[p] / t - denom for p in pos]).mean())
    return torch.stack(losses).mean()


def ref_co_tuplet(e, labels, eps=0.2):
    losses = []
    for i in range(len(e)):
        pos, neg = roles(labels, i)
        if not (pos and neg):
            continue
        d_p = max((dist(e, i, j) ** 2 for j in pos), key=lambda v: v.item())
        d_n = min((dist(e, i, n) ** 2 for n in neg), key=lambda v: v.item())
        terms = [torch.exp(dist(e, i, j) ** 2 - d_n) for j in pos if (dist(e, i, j) ** 2).item() >= d_n.item() - eps]
        terms += [torch.exp(d_p - dist(e, i, n) ** 2) for n in neg if (dist(e, i, n) ** 2).item() <= d_p.item() + eps]
        losses.append(torch.log(1 + sum(terms, torch.zeros((), dtype=e.dtype))))
    return torch.stack(losses).mean()


REFERENCES = {
    "triplet_hard": (ref_triplet_hard, {}),
    "triplet_semihard": (ref_triplet_semihard, {}),
    "sct": (ref_sct, {}),
    "lsc_plus": (lambda e, lab: ref_sct(e, lab, mu=0.5, margin=0.5), {"mu": 0.5, "margin": 0.5}),
    "supcon": (ref_supcon, {}),
    "co_tuplet": (ref_co_tuplet, {}),
}


def test_every_registered_loss_has_a_reference():
    assert set(REFERENCES) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("seed", range(6))
def test_loss_matches_loop_values_and_gradients(name, seed):
    ref_fn, kwargs = REFERENCES[name]
    emb, labels = random_batch(seed)
    ours = create_loss(name, **kwargs)(emb, labels).loss
    (grad_ours,) = torch.autograd.grad(ours, emb)
    ref = ref_fn(emb, labels)
    (grad_ref,) = torch.autograd.grad(ref, emb)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-7, atol=1e-9)


MINING = [  # (loss, its mining settings, the loop with the same settings): every swap a config can make
    ("triplet_hard", {"positives": "easy"}, lambda e, lab: ref_triplet_hard(e, lab, positives="easy")),
    ("triplet_hard", {"negatives": "easy"}, lambda e, lab: ref_triplet_hard(e, lab, negatives="easy")),
    ("sct", {"positives": "hard"}, lambda e, lab: ref_sct(e, lab, positives="hard")),
    ("sct", {"positives": "hard", "negatives": "easy"},
     lambda e, lab: ref_sct(e, lab, positives="hard", negatives="easy")),
    ("lsc_plus", {"mu": 0.7, "margin": 0.6, "pull_positives": "hard"},
     lambda e, lab: ref_sct(e, lab, mu=0.7, margin=0.6, pull_positives="hard")),
    ("lsc_plus", {"mu": 0.7, "margin": 0.6, "pull_positives": "all"},
     lambda e, lab: ref_sct(e, lab, mu=0.7, margin=0.6, pull_positives="all")),
    ("lsc_plus", {"mu": 0.7, "margin": 0.6, "positives": "hard", "pull_positives": "easy"},
     lambda e, lab: ref_sct(e, lab, mu=0.7, margin=0.6, positives="hard", pull_positives="easy")),
]


@pytest.mark.parametrize("name, mining, ref_fn", MINING, ids=[f"{n}-{m}" for n, m, _ in MINING])
@pytest.mark.parametrize("seed", range(4))
def test_mining_set_in_the_config_matches_the_loop(name, mining, ref_fn, seed):
    emb, labels = random_batch(seed, dim=4)
    ours = create_loss(name, **mining)(emb, labels).loss
    (grad_ours,) = torch.autograd.grad(ours, emb)
    ref = ref_fn(emb, labels)
    (grad_ref,) = torch.autograd.grad(ref, emb)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-7, atol=1e-9)


def test_an_argument_renamed_since_a_run_was_saved_is_read_with_its_new_name():
    emb, labels = random_batch(2, dim=4)
    with pytest.warns(DeprecationWarning, match="pull_on is now pull_positives"):
        old = create_loss("lsc_plus", margin=0.9, pull_on="hardest")
    assert old.pull_positives == "hard"
    assert old(emb, labels).loss.item() == create_loss("lsc_plus", margin=0.9, pull_positives="hard")(emb, labels).loss.item()


@pytest.mark.parametrize("name, argument, value", [("triplet_hard", "positives", "all"), ("sct", "negatives", "semihard"),
                                                   ("lsc_plus", "pull_positives", "hardest"),
                                                   ("triplet_semihard", "fallback", "easy")])
def test_a_mining_strategy_a_loss_cannot_use_is_refused_by_name(name, argument, value):
    with pytest.raises(ValueError, match=f"{argument} must be one of .*got '{value}'"):
        create_loss(name, **{argument: value})


def test_pull_activity_is_counted():
    emb, labels = random_batch(1, dim=4)
    for pull_positives, margin in (("easy", 0.5), ("hard", 0.9), ("all", 0.9)):
        out = create_loss("lsc_plus", margin=margin, pull_positives=pull_positives)(emb, labels)
        s = (emb @ emb.T).detach()
        terms = [(i, j) for i in range(len(emb)) for j in roles(labels, i)[0] if all(roles(labels, i))]
        by_anchor = {}
        for i, j in terms:
            by_anchor.setdefault(i, []).append(s[i, j].item())
        if pull_positives == "all":
            expected = sum(margin > v for vals in by_anchor.values() for v in vals), len(terms)
        else:
            pick = max if pull_positives == "easy" else min
            expected = sum(margin > pick(vals) for vals in by_anchor.values()), len(by_anchor)
        assert (int(out.counts["pull_active"]), int(out.counts["pull_terms"])) == expected, pull_positives


@pytest.mark.parametrize("seed", range(3))
def test_sct_official_threshold_rule_and_semihard_without_fallback(seed):
    emb, labels = random_batch(seed, dim=4)  # low dimension: similarities spread, some above 0.8
    ours = create_loss("sct", hard_threshold=0.3)(emb, labels).loss
    assert ours.item() == pytest.approx(ref_sct(emb, labels, hard_threshold=0.3).item(), rel=1e-9)
    assert create_loss("sct").hard_threshold == 0.8  # the official code's rule is the default
    ours = create_loss("sct", hard_threshold=None)(emb, labels).loss
    assert ours.item() == pytest.approx(ref_sct(emb, labels, hard_threshold=None).item(), rel=1e-9)
    try:
        ref = ref_triplet_semihard(emb, labels, fallback="none")
    except RuntimeError:  # no semi-hard triplet at all in this batch
        ref = torch.zeros(())
    ours = create_loss("triplet_semihard", fallback="none")(emb, labels).loss
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    "signers, genuine",
    [
        ([0, 1, 2, 3], [True] * 4),  # no positives
        ([0, 0, 0, 0], [True] * 4),  # no negatives
        ([0, 0, 1, 1], [False] * 4),  # only forgeries: no anchors at all
        ([0], [True]),  # a single sample
    ],
)
def test_no_valid_anchor_gives_zero_loss_and_finite_gradient(name, signers, genuine):
    emb = F.normalize(torch.randn(len(signers), 8, dtype=torch.float64), dim=1).requires_grad_()
    out = create_loss(name)(emb, SignatureLabels(torch.tensor(signers), torch.tensor(genuine)))
    out.loss.backward()
    assert out.loss.item() == 0.0 and int(out.n_valid) == 0
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_duplicate_embeddings_stay_finite(name):
    base = F.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1)
    emb = base[[0, 0, 1, 1, 2, 2]].clone().requires_grad_()  # exact duplicates: distance 0
    labels = SignatureLabels(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([True, True, False, True, True, False]))
    out = create_loss(name)(emb, labels)
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and torch.isfinite(emb.grad).all()


def test_forgeries_are_never_anchors_or_positives():
    labels = SignatureLabels(torch.tensor([0, 0, 0, 0, 1]), torch.tensor([True, True, False, False, True]))
    positive, skilled, other = labels.role_masks()
    negative = skilled | other
    assert not positive[2:4].any() and not negative[2:4].any()  # forgery rows: not anchors
    assert not positive[:, 2:4].any()  # forgery columns: never positives
    assert negative[0, 2] and negative[0, 3] and negative[0, 4]  # own forgeries and other signers
    assert positive[0, 1] and not positive[0, 0]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_diagnostics_count_the_anchors_and_sort_the_pairs(name):
    emb, labels = random_batch(0)
    out = create_loss(name)(emb, labels)
    n_anchors = sum(1 for i in range(len(emb)) if all(roles(labels, i)))
    assert int(out.n_valid) == n_anchors
    if name != "triplet_semihard":  # counts triplets, not anchors
        assert n_anchors == int(out.n_hard) + int(out.n_easy)
    pairs, s, g = out.pairs, labels.signer.tolist(), labels.genuine.tolist()
    for i in range(len(emb)):
        for j in range(len(emb)):
            kind = ("positive" if g[j] and i != j else "skilled" if not g[j] else None) if s[i] == s[j] else "other"
            kind = kind if g[i] else None  # forgeries are never anchors
            assert [bool(pairs.genuine[i, j]), bool(pairs.skilled[i, j]), bool(pairs.other[i, j])] == \
                [kind == "positive", kind == "skilled", kind == "other"], (i, j)
    torch.testing.assert_close(pairs.similarity, (emb @ emb.T).detach())


def test_unknown_loss_and_argument_are_named():
    with pytest.raises(ValueError, match="valid choices: co_tuplet, lsc_plus, sct, supcon, triplet_hard, triplet_semihard"):
        create_loss("arcface")
    with pytest.raises(ValueError, match="unknown argument"):
        create_loss("sct", margin=0.3)


@pytest.mark.parametrize("seed", range(4))
def test_triplet_baselines_agree_with_pytorch_metric_learning(seed):
    """With genuine signatures only, our labels mean what PML's class labels mean."""
    from pytorch_metric_learning import losses, miners, reducers

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(6).repeat_interleave(4)
    emb = F.normalize(torch.randn(len(labels), 8, generator=g, dtype=torch.float64), dim=1)
    ours_labels = SignatureLabels(labels, torch.ones(len(labels), dtype=torch.bool))
    pml_loss = losses.TripletMarginLoss(margin=0.5, reducer=reducers.MeanReducer())

    hard = pml_loss(emb, labels, miners.BatchHardMiner()(emb, labels))
    assert create_loss("triplet_hard", margin=0.5)(emb, ours_labels).loss.item() == pytest.approx(hard.item(), rel=1e-6)

    mined = miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard")(emb, labels)
    semihard = losses.TripletMarginLoss(margin=0.5)(emb, labels, mined)
    ours = create_loss("triplet_semihard", margin=0.5, fallback="none")(emb, ours_labels).loss
    assert ours.item() == pytest.approx(semihard.item(), rel=1e-6)


def test_every_list_of_losses_is_the_registry():
    """The W&B sweep and the experiment configs name exactly the registered losses."""
    import yaml

    from sigverify.losses import LOSSES

    sweep = yaml.safe_load(open("configs/sweeps/wandb_losses.yaml"))
    assert sorted(sweep["parameters"]["model.loss"]["values"]) == sorted(LOSSES)
    experiments = {yaml.safe_load(open(p))["model"]["loss"] for p in __import__("glob").glob("configs/*.yaml")
                   if p != "configs/base.yaml"}
    assert experiments == set(LOSSES)
