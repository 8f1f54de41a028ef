"""The public data set layouts (a small fixture that follows each one's file naming), several manifests
in one run with signers kept apart per data set, and cross-dataset tests with a carried-over threshold."""
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sigverify.data.importers import LAYOUTS, import_layout
from sigverify.data.manifest import read_manifest, read_manifests
from sigverify.data.splits import SplitConfig, make_split

from conftest import cli


def _image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    page = np.full((30, 60), 235, np.uint8)
    page[10:20, 5 + seed % 20:40] = 20
    Image.fromarray(page).save(path)


# Each layout's file names, as its distribution writes them: (relative path, signer, label, index).
FIXTURES = {
    "bhsig260": [("Bengali/1/B-S-1-G-01.tif", "B1", "genuine", 1), ("Bengali/1/B-S-1-F-03.tif", "B1", "forgery", 3),
                 ("Hindi/1/H-S-1-G-24.tif", "H1", "genuine", 24), ("Hindi/12/H-S-12-F-30.tif", "H12", "forgery", 30)],
    "gpds": [("001/c-001-01.jpg", "1", "genuine", 1), ("001/cf-001-30.jpg", "1", "forgery", 30),
             ("300/c-300-24.jpg", "300", "genuine", 24)],
    "mcyt75": [("0002/0002v00.bmp", "2", "genuine", 0), ("0002/0003_0002f14.bmp", "2", "forgery", 14),
               ("0200/0200v14.bmp", "200", "genuine", 14)],
    "utsig": [("Genuine/1/1.tif", "1", "genuine", 1), ("Genuine/115/27.tif", "115", "genuine", 27),
              ("Forgery/Skilled/1/6.tif", "1", "forgery", 6), ("Forgery/Simple/115/36.tif", "115", "forgery", 36)],
    "sigcomp2011": [("Offline Genuine/001_01.PNG", "1", "genuine", 1), ("Offline Genuine/012_24.PNG", "12", "genuine", 24),
                    ("Offline Forgeries/0119001_02.PNG", "1", "forgery", 2),
                    ("Questioned(1287)/012/0201012_04.png", "12", "forgery", 4)],
}


def test_every_layout_has_a_fixture():
    assert set(FIXTURES) == set(LAYOUTS)


@pytest.mark.parametrize("layout", sorted(FIXTURES))
def test_importer_reads_signer_label_and_index_from_the_names(layout, tmp_path):
    for i, (relative, *_rest) in enumerate(FIXTURES[layout]):
        _image(tmp_path / relative, i)
    (tmp_path / "readme.txt").write_text("not an image")
    records = read_manifest(import_layout(tmp_path, layout))
    got = sorted((r.path.relative_to(tmp_path.resolve()).as_posix(), r.signer, r.label, r.index) for r in records)
    assert got == sorted(FIXTURES[layout])


@pytest.mark.parametrize("layout", sorted(FIXTURES))
def test_importer_names_a_file_that_breaks_the_naming(layout, tmp_path):
    relative = FIXTURES[layout][0][0]
    _image(tmp_path / relative)
    _image(tmp_path / relative.rsplit("/", 1)[0] / "scan copy.png")
    with pytest.raises(ValueError, match=f"scan copy.png: does not follow the {layout} naming"):
        import_layout(tmp_path, layout)
    assert not (tmp_path / "manifest.csv").exists()


def test_importers_ignore_archive_debris_and_case(tmp_path):
    _image(tmp_path / "0002" / "0002V00.BMP")  # another copy's upper-case names
    _image(tmp_path / "0002" / "0003_0002F01.bmp")
    _image(tmp_path / "__MACOSX" / "0002" / "._0002v00.bmp")
    _image(tmp_path / "0002" / ".0002v09.bmp")
    records = read_manifest(import_layout(tmp_path, "mcyt75"))
    assert sorted((r.signer, r.label, r.index) for r in records) == [("2", "forgery", 1), ("2", "genuine", 0)]


def test_sigcomp_refuses_two_languages_under_one_root(tmp_path):
    _image(tmp_path / "Dutch" / "Offline Genuine" / "001_01.PNG")
    _image(tmp_path / "Chinese" / "Offline Genuine" / "001_01.PNG")
    with pytest.raises(ValueError, match="more than one of Dutch, Chinese"):
        import_layout(tmp_path, "sigcomp2011")
    assert len(read_manifest(import_layout(tmp_path / "Dutch", "sigcomp2011"))) == 1


def test_utsig_leaves_out_the_opposite_hand_on_purpose(tmp_path):
    _image(tmp_path / "Genuine/3/1.tif")
    _image(tmp_path / "Forgery/Opposite Hand/3/1.tif")
    records = read_manifest(import_layout(tmp_path, "utsig"))
    assert [(r.signer, r.label) for r in records] == [("3", "genuine")]


def test_sigverify_data_import_knows_the_layouts(tmp_path, capsys):
    for relative, *_ in FIXTURES["gpds"]:
        _image(tmp_path / relative)
    assert cli("data", "import", "gpds", str(tmp_path)) == 0
    assert "signers: 2" in capsys.readouterr().out


def _dataset(folder, signers, genuine=4, forgeries=2):
    for s in range(signers):
        for n in range(genuine + forgeries):
            _image(folder / f"{s}" / f"{folder.name}-{'g' if n < genuine else 'forg'}{n}.png", s + n)
    from sigverify.data.importers import import_folders

    return import_folders(folder, forgery_pattern="forg")


def test_several_manifests_keep_their_signers_apart(tmp_path):
    a, b = _dataset(tmp_path / "alpha", 3), _dataset(tmp_path / "beta", 2)
    records = read_manifests([a, b])
    assert Counter(r.signer.split(":")[0] for r in records) == {"alpha": 18, "beta": 12}
    assert {r.signer for r in records} >= {"alpha:0", "beta:0"}  # signer 0 of each: two people
    assert read_manifests([a]) == read_manifest(a)  # one manifest: ids as they are
    _dataset(tmp_path / "x" / "alpha", 1)
    with pytest.raises(Exception, match="folder name 'alpha' is also that of"):
        read_manifests([a, tmp_path / "x" / "alpha" / "manifest.csv"])
    _dataset(tmp_path / "a:b", 1)
    with pytest.raises(Exception, match="cannot name a data set"):
        read_manifests([a, tmp_path / "a:b" / "manifest.csv"])
    from sigverify.data.manifest import write_manifest

    write_manifest(read_manifest(a)[:2], tmp_path / "copy" / "manifest.csv")  # the same images, another name
    with pytest.raises(Exception, match="which .*alpha/manifest.csv lists too"):
        read_manifests([a, tmp_path / "copy" / "manifest.csv"])
    from sigverify.data.datamodule import SignatureDataModule

    with pytest.raises(ValueError, match="data.root is an empty list"):
        SignatureDataModule(root=[]).manifest_paths()


@pytest.mark.parametrize("mode", ["ratios", "kfold"])
def test_split_is_made_within_each_data_set(mode):
    signers = [f"big:{i}" for i in range(40)] + [f"small:{i}" for i in range(10)]
    datasets = {s: s.split(":")[0] for s in signers}
    config = SplitConfig(mode=mode, test_ratio=0.2, val_ratio=0.25, min_val=2, folds=5, fold=1)
    split = make_split(signers, config, datasets)
    for part in ("train", "val", "test"):
        assert {datasets[s] for s in split[part]} == {"big", "small"}, part  # every data set in every part
    assert sorted(sum(split.values(), []), key=str) == sorted(signers, key=str)
    assert Counter(datasets[s] for s in split["test"]) == {"big": 8, "small": 2}
    # Each data set gets the split it would get alone, on its own ids (natural order: 2 before 10).
    for name, n in (("big", 40), ("small", 10)):
        alone = make_split([str(i) for i in range(n)], config)
        for part in ("train", "val", "test"):
            assert sorted(s.split(":")[1] for s in split[part] if datasets[s] == name) == sorted(alone[part]), part
    with pytest.raises(ValueError, match="data set 'small'"):
        make_split(signers, SplitConfig(test_ratio=0.9, val_ratio=0.5), datasets)  # none left to train on


def test_training_only_data_sets_give_every_signer_to_training():
    signers = [f"real:{i}" for i in range(20)] + [f"synth:{i}" for i in range(30)]
    datasets = {s: s.split(":")[0] for s in signers}
    config = SplitConfig(mode="kfold", val_ratio=0.25, min_val=2, folds=5, fold=3)
    split = make_split(signers, config, datasets, train_only=["synth"])
    assert {s for s in split["train"] if datasets[s] == "synth"} == {f"synth:{i}" for i in range(30)}
    alone = make_split([str(i) for i in range(20)], config)  # the real data set's split as if alone
    for part in ("train", "val", "test"):
        assert sorted(s.split(":")[1] for s in split[part] if datasets[s] == "real") == sorted(alone[part]), part
    with pytest.raises(ValueError, match=r"training-only data sets \['other'\] are not among"):
        make_split(signers, config, datasets, train_only=["other"])
    with pytest.raises(ValueError, match="none is left for validation and test"):
        make_split(signers, config, datasets, train_only=["real", "synth"])
    # Listed splits: the training-only signers train, whether listed or not, and are never validated or tested.
    listed = SplitConfig(mode="lists", train=["real:0"], val=["real:1"], test=["real:2"])
    split = make_split(signers, listed, datasets, train_only=["synth"])
    assert set(split["train"]) == {"real:0"} | {f"synth:{i}" for i in range(30)}
    with pytest.raises(ValueError, match=r"training-only data sets .* for validation or test: \['synth:3'\]"):
        make_split(signers, SplitConfig(mode="lists", test=["synth:3"]), datasets, train_only=["synth"])


def test_fit_with_a_training_only_data_set_then_test_on_the_main_one_alone(tmp_path):
    """`--data.train_extra`: the extra data set's signers only train; the main data set is validated and
    tested on the signers a run on it alone would use, so its test on it alone is accepted."""
    from conftest import SERVED_TINY

    main, extra = _dataset(tmp_path / "main", 8), _dataset(tmp_path / "extra", 6)
    common = ["--config", "configs/triplet_hard.yaml", "--vars.runs_root", str(tmp_path / "runs"), *SERVED_TINY,
              "--data.cache_dir", str(tmp_path / "cache"), "--data.split.min_val", "2", "--data.root", str(main),
              "--data.sampler.batches_per_epoch", "2", "--trainer.max_epochs", "1"]
    assert cli("fit", *common, "--vars.name", "mixed", "--data.train_extra", f"[{extra}]") == 0
    run = tmp_path / "runs" / "mixed"
    split = json.loads((run / "split.json").read_text())
    assert {s for s in split["train"] if s.startswith("extra:")} == {f"extra:{i}" for i in range(6)}
    assert all(s.startswith("main:") for s in split["val"] + split["test"]) and split["val"] and split["test"]
    ckpt = str(next((run / "checkpoints").glob("best-*.ckpt")))
    assert cli("test", *common, "--vars.name", "main-alone", "--ckpt_path", str(run)) == 0  # the run's best checkpoint
    report = json.loads((tmp_path / "runs" / "main-alone" / "test-references" / "report.json").read_text())
    assert report["n_signers"] == len(split["test"])
    with pytest.raises(ValueError, match=r"trained or validated on \d+ of this run"):  # it trained on every one
        cli("test", *common, "--vars.name", "extra-alone", "--ckpt_path", ckpt, "--data.root", str(extra))
    extra.rename(tmp_path / "moved")  # export needs data.root's validation signers only
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp_path / "model")) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"training signers also from `{extra}` (training only)" in card
    # A listed split names prefixed ids; export rebuilds data.root alone, whose ids are bare.
    (tmp_path / "moved").rename(extra)
    listed = ["--data.split.mode", "lists", "--data.split.val", "[main:0, main:1]", "--data.split.test", "[main:2, main:3]"]
    assert cli("fit", *common, *listed, "--vars.name", "listed", "--data.train_extra", f"[{extra}]") == 0
    listed_ckpt = str(next((tmp_path / "runs" / "listed" / "checkpoints").glob("best-*.ckpt")))
    assert cli("export", "--ckpt", listed_ckpt, "--out", str(tmp_path / "listed-model")) == 0
    assert json.loads((tmp_path / "listed-model" / "config.json").read_text())["split"]["val"] == ["main:0", "main:1"]
    with pytest.raises(Exception, match="manifest not found"):
        cli("fit", *common, "--vars.name", "bad", "--data.train_extra", f"[{tmp_path / 'nowhere'}]")


def test_fit_on_two_manifests_and_a_cross_dataset_test(tmp_path):
    """Train on two data sets through `sigverify fit`; test on a third, with its own validation signers'
    threshold and with the first run's carried over, and the report says which."""
    from conftest import SERVED_TINY

    a, b = (_dataset(tmp_path / n, 8) for n in ("alpha", "beta"))
    other = _dataset(tmp_path / "gamma", 8)
    common = ["--config", "configs/triplet_hard.yaml", "--vars.runs_root", str(tmp_path / "runs"), *SERVED_TINY,
              "--data.cache_dir", str(tmp_path / "cache"), "--data.split.min_val", "2",
              "--data.sampler.batches_per_epoch", "2", "--trainer.max_epochs", "1"]
    assert cli("fit", *common, "--vars.name", "two", "--data.root", f"[{a}, {b}]") == 0
    run = tmp_path / "runs" / "two"
    split = json.loads((run / "split.json").read_text())
    for part in ("train", "val", "test"):
        assert {s.split(":")[0] for s in split[part]} == {"alpha", "beta"}
    assert cli("test", *common, "--vars.name", "two", "--ckpt_path", "best", "--data.root", f"[{a}, {b}]") == 0
    carried_from = run / "test-references" / "report.json"
    own = json.loads(carried_from.read_text())
    ckpt = str(next((run / "checkpoints").glob("best-*.ckpt")))

    for name, extra in (("own", []), ("carried", ["--model.evaluation.threshold_from", str(carried_from)])):
        assert cli("test", *common, "--vars.name", f"gamma-{name}", "--ckpt_path", ckpt,
                   "--data.root", str(other), *extra) == 0
    gamma_own = json.loads((tmp_path / "runs" / "gamma-own" / "test-references" / "report.json").read_text())
    gamma_carried = json.loads((tmp_path / "runs" / "gamma-carried" / "test-references" / "report.json").read_text())
    assert gamma_own["threshold_source"].startswith("validation signers")
    assert gamma_carried["threshold_source"].startswith(f"carried over from {carried_from}")
    assert gamma_carried["threshold"] == own["threshold"]
    assert gamma_carried["eer"] == gamma_own["eer"]  # same model, same test signers: only the threshold moved
    # Without any validation signer in the new data set: every signer tested, the threshold carried over.
    everyone = json.dumps([str(i) for i in range(8)])
    assert cli("test", *common, "--vars.name", "gamma-all", "--ckpt_path", ckpt, "--data.root", str(other),
               "--data.split.mode", "lists", "--data.split.test", everyone,
               "--model.evaluation.threshold_from", str(run)) == 0
    gamma_all = json.loads((tmp_path / "runs" / "gamma-all" / "test-references" / "report.json").read_text())
    assert gamma_all["n_signers"] == 8 and gamma_all["threshold"] == own["threshold"]
    assert "carried over" in gamma_all["hter_ci95_note"]
    # A report whose scores mean something else cannot lend its threshold.
    with pytest.raises(ValueError, match=r"report.json: its threshold was chosen with other score settings \(normalize"):
        cli("test", *common, "--vars.name", "gamma-bad", "--ckpt_path", ckpt, "--data.root", str(other),
            "--model.evaluation.threshold_from", str(carried_from), "--model.evaluation.normalize", "none")
    with pytest.raises(ValueError, match=r"other score settings \(tta_shift: 0.0 there, 0.1 here\)"):  # embedded otherwise
        cli("test", *common, "--vars.name", "gamma-bad", "--ckpt_path", ckpt, "--data.root", str(other),
            "--model.evaluation.threshold_from", str(carried_from), "--model.inference.tta_shift", "0.1")
    with pytest.raises(ValueError, match="not a readable report.json"):
        cli("test", *common, "--vars.name", "gamma-bad", "--ckpt_path", ckpt, "--data.root", str(other),
            "--model.evaluation.threshold_from", str(tmp_path))


def test_export_rebuilds_every_validated_data_set_and_no_other():
    from sigverify.data.splits import same_validation_signers, split_record

    both = split_record({"train": ["alpha:1", "beta:1", "extra:1"], "val": ["alpha:2", "beta:2"],
                         "test": ["alpha:3", "beta:3"]}, "ABX", {"alpha": "A", "beta": "B", "extra": "X"})
    rebuilt = split_record({"train": ["alpha:1", "beta:1"], "val": ["alpha:2", "beta:2"], "test": ["alpha:3", "beta:3"]},
                           "AB", {"alpha": "A", "beta": "B"})
    assert same_validation_signers(both, rebuilt)  # the training-only data set need not be rebuilt
    assert not same_validation_signers(both, split_record({"train": ["1"], "val": ["2"], "test": ["3"]}, "A"))  # beta missing
    with_extra = split_record({"train": ["main:1", "extra:1"], "val": ["main:2"], "test": ["main:3"]}, "MX",
                              {"main": "M", "extra": "X"})
    assert same_validation_signers(with_extra, split_record({"train": ["1"], "val": ["2"], "test": ["3"]}, "M"))
    assert not same_validation_signers(with_extra, split_record({"train": ["2"], "val": ["1"], "test": ["3"]}, "M"))
    alone = split_record({"train": ["1"], "val": ["2"], "test": ["3"]}, "M")
    assert same_validation_signers(alone, alone)
    assert not same_validation_signers(alone, split_record({"train": ["1"], "val": ["2"], "test": ["3"]}, "other"))


def test_a_model_of_several_data_sets_is_refused_on_one_of_them_alone():
    """Trained on alpha + beta, tested on alpha alone: alpha's signers are the same people under bare ids."""
    from sigverify.data.splits import refuse_seen_signers, split_record

    trained = split_record({"train": ["alpha:1", "beta:1"], "val": ["alpha:2"], "test": ["alpha:3", "beta:2"]},
                           "AB", {"alpha": "A", "beta": "B"})
    refuse_seen_signers(trained, split_record({"train": ["1"], "val": ["2"], "test": ["3"]}, "A"), "m")  # same split
    with pytest.raises(ValueError, match="1 of this run's validation/test signers"):
        refuse_seen_signers(trained, split_record({"train": ["2"], "val": ["3"], "test": ["1"]}, "A"), "m")
    with pytest.raises(ValueError, match="1 of this run's validation/test signers"):  # and the other way round
        refuse_seen_signers(split_record({"train": ["1"], "val": [], "test": []}, "B"),
                            split_record({"train": [], "val": [], "test": ["alpha:1", "beta:1"]}, "AB",
                                         {"alpha": "A", "beta": "B"}), "m")
    with pytest.warns(UserWarning, match="another data set"):  # other data, same names: a warning only
        refuse_seen_signers(trained, split_record({"train": [], "val": [], "test": ["alpha:1"]}, "C"), "m")


def test_prefixed_signer_ids_keep_each_data_sets_own_order():
    """`signer_order` of `main:ID` among another set's ids orders a data set's signers as its bare ids, whatever
    they hold (numbers past 9, names, `:` of their own, leading zeros); no two ids tie."""
    from sigverify.data.manifest import signer_order

    bare = ["7", "b", "a:9", "a:10", "05", "5", "B1", "12", "2"]
    mixed = sorted([f"main:{s}" for s in bare] + ["extra:3", "extra:10"], key=signer_order)
    assert [s.split(":", 1)[1] for s in mixed if s.startswith("main:")] == sorted(bare, key=signer_order)
    assert sorted(bare, key=signer_order)[:5] == ["2", "05", "5", "7", "12"]
    assert len({signer_order(s) for s in bare}) == len(bare)


def test_a_training_only_data_set_leaves_the_test_scores_alone(tmp_path):
    """`sigverify test` of one network on a data set alone and with `--data.train_extra`: the same test signers get
    the same scores in both protocols. The references protocol draws each signer's references in signer order,
    so prefixed ids (`main:10`) must sort as the bare ones do (10 after 9), not as strings."""
    from conftest import SERVED_TINY

    main, extra = _dataset(tmp_path / "main", 12), _dataset(tmp_path / "extra", 3)
    common = ["--config", "configs/triplet_hard.yaml", "--vars.runs_root", str(tmp_path / "runs"), *SERVED_TINY,
              "--data.cache_dir", str(tmp_path / "cache"), "--data.root", str(main), "--seed_everything", "0",
              "--data.split.mode", "kfold", "--data.split.folds", "3", "--data.split.fold", "0"]
    assert cli("test", *common, "--vars.name", "alone") == 0  # the untrained network: no fit needed
    assert cli("test", *common, "--vars.name", "with-extra", "--data.train_extra", f"[{extra}]") == 0
    tested = json.loads((tmp_path / "runs" / "alone" / "test" / "split.json").read_text())["test"]
    assert min(map(int, tested)) < 10 <= max(map(int, tested))  # where string order and number order part
    for protocol in ("references", "pairs"):
        alone, mixed = (np.load(tmp_path / "runs" / name / f"test-{protocol}" / "scores.npz")
                        for name in ("alone", "with-extra"))
        for kind in ("genuine", "skilled", "random"):
            np.testing.assert_array_equal(alone[kind], mixed[kind], err_msg=f"{protocol} {kind}")
