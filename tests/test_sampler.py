import warnings
from collections import Counter

import numpy as np
import pytest

from sigverify.data.sampler import PKFMBatchSampler


def random_dataset(seed, n_signers=12, genuine=(3, 10), forgeries=(0, 8)):
    rng = np.random.default_rng(seed)
    signers, genuine_flags = [], []
    for s in range(n_signers):
        g, f = rng.integers(*genuine), rng.integers(*forgeries)
        signers += [s] * (g + f)
        genuine_flags += [True] * g + [False] * f
    order = rng.permutation(len(signers))  # samples in no particular order
    return np.array(signers)[order], np.array(genuine_flags)[order]


@pytest.mark.parametrize("seed", range(8))
def test_batch_composition_and_size(seed):
    signers, genuine = random_dataset(seed, forgeries=(2, 8))
    p, k, f, m = 4, 2, 2, 1
    sampler = PKFMBatchSampler(signers, genuine, p, k, f, m, batches_per_epoch=10, seed=seed)
    for batch in sampler:
        assert len(batch) == sampler.batch_size == p * (k + f + m)
        for group in np.array(batch).reshape(p, k + f + m):
            s = signers[group[0]]
            assert all(signers[group[:k]] == s) and genuine[group[:k]].all()  # K genuine of s
            assert all(signers[group[k:k + f]] == s) and not genuine[group[k:k + f]].any()  # F forgeries of s
            assert all(signers[group[k + f:]] != s) and genuine[group[k + f:]].all()  # M others' genuine


def test_reproducible_from_seed_and_epoch_and_changing_between_epochs():
    signers, genuine = random_dataset(0)
    a = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=20, seed=5)
    b = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=20, seed=5)
    epochs = []
    for epoch in range(3):
        a.set_epoch(epoch), b.set_epoch(epoch)
        batches = list(a)
        assert batches == list(b)
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    a.set_epoch(0)
    assert list(a) == epochs[0]
    other_seed = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=20, seed=6)
    assert list(other_seed) != epochs[0]


def test_signers_are_visited_in_balance():
    # One prolific signer (200 samples) among small ones must not dominate.
    signers = np.array([0] * 200 + [s for s in range(1, 10) for _ in range(6)])
    genuine = np.ones(len(signers), bool)
    sampler = PKFMBatchSampler(signers, genuine, p=3, k=2, f=0, m=0, batches_per_epoch=30, seed=0)
    visits = Counter(signers[batch[i * 2]] for batch in sampler for i in range(3))
    assert max(visits.values()) - min(visits.values()) <= 1


def test_short_signers_sampled_with_replacement_and_warned():
    signers = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    genuine = np.array([True, False, False, True, True, True, True, True, True, True, True, True])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = PKFMBatchSampler(signers, genuine, p=3, k=3, f=2, m=1, batches_per_epoch=4, seed=0)
    text = " ".join(str(w.message) for w in caught)
    assert "fewer than K=3 genuine" in text and "no forgeries" in text
    for batch in sampler:
        assert len(batch) == sampler.batch_size  # signers without forgeries get other signers' samples


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_are_disjoint_equal_length_and_cover_the_epoch(world):
    signers, genuine = random_dataset(1, n_signers=20)
    shards = []
    for rank in range(world):
        sampler = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=10, seed=3,
                                   num_replicas=world, rank=rank)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    full = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=10, seed=3, num_replicas=world, rank=0)
    epoch = full.epoch_batches(2)
    positions = [tuple(b) for s in shards for b in s]
    assert sorted(positions) == sorted(tuple(b) for b in epoch)  # together: the epoch, each batch once
    for r in range(world):  # different ranks see different signers in a round
        for q in range(r + 1, world):
            assert shards[r][0] != shards[q][0]


@pytest.mark.parametrize("seed", range(6))
def test_no_dataset_index_twice_in_a_batch_while_the_pool_allows_it(seed):
    # The gpu_cedar shape on a CEDAR-sized set: 16 signers x (4 + 2 + 2) from 40 signers x (24 + 24),
    # where signer rounds wrap inside batches and the M slots draw from everyone's genuine signatures.
    signers, genuine = random_dataset(seed, n_signers=40, genuine=(20, 25), forgeries=(20, 25))
    sampler = PKFMBatchSampler(signers, genuine, p=16, k=4, f=2, m=2, batches_per_epoch=40, seed=seed)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            assert len(set(batch)) == len(batch)
            groups = np.array(batch).reshape(16, 8)
            assert len({signers[g[0]] for g in groups}) == 16  # P distinct signers, even across round boundaries


def test_small_pools_repeat_only_what_they_must():
    # 3 signers x 2 genuine, K=3: each signer's group needs a repeat, but only one.
    signers = np.repeat([0, 1, 2], 2)
    genuine = np.ones(6, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = PKFMBatchSampler(signers, genuine, p=3, k=3, f=0, m=0, batches_per_epoch=5, seed=0)
    for batch in sampler:
        for group in np.array(batch).reshape(3, 3):
            assert len(set(group)) == 2 and len({signers[i] for i in group}) == 1


def test_resume_state_continues_the_epoch():
    signers, genuine = random_dataset(2)
    a = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=10, seed=1)
    a.set_epoch(3)
    epoch = list(a)
    state = a.state_dict(batches_done=4)
    b = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=10, seed=1)
    b.load_state_dict(state)
    b.set_epoch(3)  # Lightning sets the same epoch again after restoring: the position is kept
    assert list(b) == epoch[4:]
    assert list(b) == epoch  # the skip applies to the resumed epoch's first pass only
    done = a.state_dict(batches_done=10)
    assert (done["epoch"], done["start"]) == (4, 0)  # a finished epoch resumes with the next one
    assert a.state_dict(batches_done=2, epoch_finished=True)["epoch"] == 4  # limit_train_batches ended it
    b.set_epoch(5)
    assert list(b) == b.epoch_batches(5)


def test_lightning_finds_the_epoch_setter():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    signers, genuine = random_dataset(0)
    sampler = PKFMBatchSampler(signers, genuine, 4, 2, 2, 2, batches_per_epoch=5, seed=0)
    _set_sampler_epoch(DataLoader(range(len(signers)), batch_sampler=sampler), 7)
    assert sampler.epoch == 7


def test_bad_parameters():
    with pytest.raises(ValueError, match="P, K >= 1"):
        PKFMBatchSampler([0, 0], [True, True], p=0)
    with pytest.raises(ValueError, match="rank"):
        PKFMBatchSampler([0, 0], [True, True], num_replicas=2, rank=2)
