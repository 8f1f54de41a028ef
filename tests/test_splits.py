import json

import pytest

from sigverify.data.splits import SplitConfig, make_split, save_split

SIGNERS = [str(i) for i in range(1, 56)]


def assert_partition(split, signers):
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(signers)


@pytest.mark.parametrize("seed", range(10))
def test_ratio_splits_are_disjoint_seeded_and_sized(seed):
    split = make_split(SIGNERS, SplitConfig(seed=seed))
    assert_partition(split, SIGNERS)
    assert len(split["test"]) == 11  # the write-up's 20 %
    assert len(split["val"]) == 8  # 10 % of the rest would be 4 signers: too few to fix a threshold on
    assert split == make_split(SIGNERS, SplitConfig(seed=seed))
    assert split != make_split(SIGNERS, SplitConfig(seed=seed + 100))


def test_validation_floor_leaves_training_signers():
    few = SIGNERS[:12]
    split = make_split(few, SplitConfig(seed=0))
    assert len(split["test"]) == 2 and len(split["val"]) == 5 and len(split["train"]) == 5  # half of the 10 left
    many = [str(i) for i in range(1000)]
    assert len(make_split(many, SplitConfig(seed=0))["val"]) == 80  # the ratio wins on large sets
    assert len(make_split(SIGNERS, SplitConfig(seed=0, min_val=0))["val"]) == 4


def test_kfold_tests_every_signer_exactly_once():
    tested = []
    for fold in range(5):
        split = make_split(SIGNERS, SplitConfig(mode="kfold", folds=5, fold=fold))
        assert_partition(split, SIGNERS)
        tested += split["test"]
    assert sorted(tested, key=int) == SIGNERS


def test_kfold_validation_signers_rotate_with_the_fold():
    """Each fold validates on the next fold's test signers, so 5 folds of 8 fix their thresholds (and a screen
    chooses) on 40 signers; from the permutation's front (the scheme of runs fitted before it) every fold
    validated on nearly the same 8-10 signers."""
    folds = [make_split(SIGNERS, SplitConfig(mode="kfold", fold=fold)) for fold in range(5)]
    for fold, split in enumerate(folds):
        assert len(split["val"]) == 8 and set(split["val"]) <= set(folds[(fold + 1) % 5]["test"])
    assert len({s for split in folds for s in split["val"]}) == 40
    front = [make_split(SIGNERS, SplitConfig(mode="kfold", fold=fold, val_from="front")) for fold in range(5)]
    assert [split["test"] for split in front] == [split["test"] for split in folds]  # the test folds stay
    assert len({s for split in front for s in split["val"]}) <= 12
    for split in front:
        assert_partition(split, SIGNERS)
    with pytest.raises(ValueError, match="val_from"):
        make_split(SIGNERS, SplitConfig(mode="kfold", val_from="back"))


def test_explicit_lists_and_errors():
    split = make_split(SIGNERS, SplitConfig(mode="lists", val=["1", "2"], test=["3"]))
    assert split["val"] == ["1", "2"] and split["test"] == ["3"] and len(split["train"]) == 52
    with pytest.raises(ValueError, match="both split.val and split.test"):
        make_split(SIGNERS, SplitConfig(mode="lists", val=["1"], test=["1"]))
    with pytest.raises(ValueError, match="not in the data"):
        make_split(SIGNERS, SplitConfig(mode="lists", test=["999"]))
    with pytest.raises(ValueError, match="mode"):
        make_split(SIGNERS, SplitConfig(mode="random"))


def test_saved_split_repeats_the_run(tmp_path):
    config = SplitConfig(seed=7)
    split = make_split(SIGNERS, config)
    path = save_split(split, tmp_path / "split.json", config)
    assert json.loads(path.read_text())["config"]["seed"] == 7
    assert make_split(SIGNERS, SplitConfig(mode="file", file=str(path))) == split


def test_seen_signers_are_refused_through_every_path():
    import warnings

    from sigverify.data.splits import refuse_seen_signers, split_record

    this = split_record({"train": ["1", "2"], "val": ["3"], "test": ["4"]}, data="A")
    refuse_seen_signers(split_record({"train": ["1", "2"], "val": ["3"], "test": ["4"]}, "A"), this, "m")  # same split
    refuse_seen_signers(split_record({"train": ["5"], "val": ["3"], "test": ["1"]}, "A"), this, "m")  # only its val
    with pytest.raises(ValueError, match=r"m was trained or validated on 1 of this run's validation/test signers \(4\)"):
        refuse_seen_signers(split_record({"train": ["4"], "val": [], "test": []}, "A"), this, "m")
    with pytest.raises(ValueError, match=r"on 1 of .*\(4\)"):  # chose its checkpoint on this run's test signer
        refuse_seen_signers(split_record({"train": ["1"], "val": ["4"], "test": []}, "A"), this, "m")
    inherited = {**split_record({"train": ["1"], "val": [], "test": []}, "A"),
                 "init": split_record({"train": ["3"], "val": [], "test": []}, "A")}
    with pytest.raises(ValueError, match="through the model it was initialised from"):
        refuse_seen_signers(inherited, this, "m")
    with pytest.raises(ValueError, match="does not record"):
        refuse_seen_signers(None, this, "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refuse_seen_signers(split_record({"train": ["4"], "val": [], "test": []}, "B"), this, "m")  # another data set
        refuse_seen_signers(split_record({"train": ["4"], "val": [], "test": []}, "A"), this, "m", allow=True)
    assert "another data set" in str(caught[0].message) and "allowed" in str(caught[1].message)
