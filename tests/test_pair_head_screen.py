"""The pair-head screen (benchmarks/pair_head.py, issue #13 item 3): its parts, and the whole screen
run as a user runs it on a data set the backbone never saw."""
import json

import numpy as np
import pytest
import torch

from benchmarks import pair_head
from sigverify.evaluation.metrics import auc
from sigverify.models.embedding import SignatureEmbedder, embed_images


def test_the_backbone_features_give_the_models_own_embeddings():
    """The screen's embedding score must be the model's: features() reads the stage map and the
    embedding in one pass, and that pass must equal the embedder's forward."""
    torch.manual_seed(0)
    embedder = SignatureEmbedder("test_efficientnet", dim=16, hidden=[8]).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 64), dtype=np.uint8)
    feats = pair_head.features(embedder, images, stage=-2, batch=2)
    np.testing.assert_allclose(feats.embeddings, embed_images(embedder, images), atol=1e-6)
    assert feats.tokens.shape[:2] == (5, 8)  # a 2 x 4 map at 32 x 64 (stride 16)


def test_the_head_scores_both_orders_alike():
    torch.manual_seed(0)
    head = small_head(tokens=6, channels=5).eval()
    a, b = torch.randn(3, 6, 5), torch.randn(3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(head(a, b), head(b, a))


def small_head(tokens: int, channels: int):
    return pair_head.PairHead(channels, tokens, dim=16, layers=1, heads=2)


def test_training_pairs_are_labelled_by_what_they_hold():
    signers = np.repeat(np.arange(4), 6)
    genuine = np.tile([True] * 4 + [False] * 2, 4)
    a, b, label = pair_head.PairSampler(signers, genuine, np.random.default_rng(1)).sample(400)
    assert genuine[a].all() and (a != b).all()
    positive = label == 1
    assert positive.mean() == 0.5
    assert (signers[a][positive] == signers[b][positive]).all() and genuine[b][positive].all()
    skilled = ~positive & (signers[a] == signers[b])
    random = ~positive & (signers[a] != signers[b])
    assert (~genuine[b][skilled]).all() and genuine[b][random].all()
    assert skilled.any() and random.any() and (skilled | random | positive).all()


def test_a_sampler_without_negatives_is_refused():
    with pytest.raises(ValueError, match="no genuine pair or no negative pair"):
        pair_head.PairSampler(np.zeros(4, int), np.ones(4, bool), np.random.default_rng(0))


def test_the_training_views_repeat_with_the_seed():
    """The head's training views come from the run's augmentation, seeded from the screen's seed: a
    rerun trains on the same views (albumentations keeps its own generator, unmoved by numpy's)."""
    from sigverify.data.augment import AugmentConfig

    images = np.zeros((3, 32, 64), np.uint8)
    images[:, 10:20, 5:60] = 255
    first, again = (pair_head.augmented_views(images, AugmentConfig(), 3, np.random.default_rng(7)) for _ in range(2))
    other = pair_head.augmented_views(images, AugmentConfig(), 3, np.random.default_rng(8))
    assert first.shape == (3, 3, 32, 64) and (first[0] == images).all()
    assert (first == again).all() and not (first[1:] == other[1:]).all()
    assert pair_head.augmented_views(images, AugmentConfig(enabled=False), 3, np.random.default_rng(7)).shape == (1, 3, 32, 64)


def test_the_similarity_matrix_holds_each_pairs_own_score():
    """The protocols' code reads scores as a matrix; the head scores it in chunks, which must keep
    every pair in its cell (two different sets, 40 x 30 pairs in chunks of 64 with a short last one)."""
    torch.manual_seed(0)
    head = small_head(tokens=4, channels=3).eval()
    rng = np.random.default_rng(2)
    rows = np.concatenate([rng.normal(size=(70, 5)), rng.normal(size=(70, 12))], axis=1).astype(np.float32)
    scores = pair_head.similarities(head, (4, 3), {"embedding": 2.0, "head": 4.0}, chunk=64)
    a, b = rows[:40], rows[40:]
    matrix = scores["head"](a, b)
    assert matrix.shape == (40, 30)
    tokens = torch.from_numpy(rows[:, 5:].reshape(70, 4, 3))
    with torch.no_grad():
        expected = head(tokens[:40].repeat_interleave(30, 0), tokens[40:].repeat(40, 1, 1)).numpy().reshape(40, 30)
    np.testing.assert_allclose(matrix, expected, atol=1e-5)
    np.testing.assert_allclose(scores["embedding"](a, b), a[:, :5] @ b[:, :5].T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores["fused"](a, b), a[:, :5] @ b[:, :5].T / 2.0 + expected / 4.0, rtol=1e-4, atol=1e-4)


def test_the_head_learns_which_pairs_belong_together():
    """Forgeries differ from their signer's genuine signatures in one token only, and other signers
    everywhere; trained on these images' pairs, the head must score pairs of them it did not draw in
    training by what they hold."""
    rng = np.random.default_rng(3)
    users, per, tokens, channels = 12, 8, 4, 6
    prototype = rng.normal(size=(users, tokens, channels))
    signers = np.repeat(np.arange(users), per)
    genuine = np.tile([True] * 5 + [False] * 3, users)
    bank = prototype[signers] + 0.1 * rng.normal(size=(len(signers), tokens, channels))
    bank[~genuine, rng.integers(tokens), :] += 2.0  # a local change
    bank = bank[None].astype(np.float32)  # one view
    args = type("Args", (), dict(dim=16, layers=1, lr=3e-3, steps=300, batch=64))()
    torch.manual_seed(0)
    head = pair_head.train_head(bank, signers, genuine, args, np.random.default_rng(4))
    a, b, label = pair_head.PairSampler(signers, genuine, np.random.default_rng(5)).sample(400)
    with torch.no_grad():
        logits = head(torch.from_numpy(bank[0, a]), torch.from_numpy(bank[0, b])).numpy()
    assert auc(logits[label == 1], logits[label == 0]) > 0.95


def test_the_screen_runs_on_a_data_set_its_backbone_never_saw(served_model, synth_manifest, cache_dir, capsys):
    """The whole screen, as a user runs it: a model trained on one synthetic set, screened on another
    (a transfer backbone, like the synthetic-only model on CEDAR); its last line is the JSON summary."""
    _, _, ckpt, _ = served_model
    with pytest.warns(UserWarning, match="another data set"):
        assert pair_head.main(["--data", str(synth_manifest), "--backbone", ckpt, "--folds", "2", "--steps", "20",
                               "--views", "2", "--dim", "16", "--layers", "1", "--batch", "16",
                               "--n-references", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["eer"]) == {f"{p}/{s}" for p in ("pairs", "references") for s in pair_head.SCORES}
    for figures in line["eer"].values():
        assert len(figures["per_fold"]) == 2 and all(0 <= v <= 1 for v in figures["per_fold"])
        assert figures["eer_mean"] == pytest.approx(np.mean(figures["per_fold"]), abs=1e-4)


def test_a_backbone_trained_on_the_screened_signers_is_refused(served_model, cache_dir):
    """Screened on its own data set under another split, the served model saw some of the folds'
    validation signers in training: its features would flatter them, so the screen stops."""
    tmp, _, ckpt, _ = served_model
    own_data = next((tmp / "cache").glob("synthetic-*/manifest.csv"))
    with pytest.raises(ValueError, match="trained or validated on .* validation/test signers"):
        pair_head.main(["--data", str(own_data), "--backbone", ckpt, "--folds", "2", "--steps", "1",
                        "--n-references", "3"])
