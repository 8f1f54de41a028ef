"""make sweep in a test-sized setting: every member trained and tested, failures reported, reruns reuse."""
import argparse
import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from sigverify import sweep

TINY = ["--data.synthetic.signers", "12", "--data.synthetic.genuine", "4", "--data.synthetic.forgeries", "4",
        "--data.preprocess.height", "32", "--data.preprocess.width", "64", "--data.sampler.p", "4",
        "--data.sampler.batches_per_epoch", "2", "--trainer.max_epochs", "1", "--data.num_workers", "0",
        "--model.evaluation.bootstrap", "50", "--model.evaluation.n_references", "2"]


@pytest.mark.slow
def test_sweep_end_to_end_with_a_failing_member_and_reuse(tmp_path, monkeypatch, capsys, request):
    monkeypatch.setenv("SIGVERIFY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    # loss_args that only LSC+ accepts: the triplet member fails, the sweep goes on.
    args = ["--losses", "lsc_plus", "triplet_hard", "--out", str(out), "--preset", "configs/presets/cpu_tiny.yaml",
            *TINY, "--model.loss_args", "{mu: 0.5, margin: 0.5}"]
    assert sweep.main([*args, "--protocols", "pairs"]) == 0
    text = (out / "results.md").read_text()
    assert "| lsc_plus | triplet_hard |" in text and "| members finished / failed | 1 / 0 | 0 / 1 |" in text
    assert "Protocol `references`" not in text
    rows = {(r["protocol"], r["metric"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert 0 <= float(rows["pairs", "eer"]["lsc_plus_mean"]) <= 1 and rows["pairs", "eer"]["triplet_hard_mean"] == ""
    assert (out / "roc_overlay-pairs.png").is_file()
    checkpoint = next((out / "lsc_plus-seed0" / "checkpoints").glob("best*.ckpt"))
    fitted_at = checkpoint.stat().st_mtime_ns

    # The rest runs the members' commands in this process (the fixture's reasons); what is checked is the
    # sweep's bookkeeping: reuse, retries, retests, ensembles and the screen.
    request.getfixturevalue("members_in_this_process")
    # Adding a protocol tests the fitted member again without refitting it; the failed one is retried
    # from a clean folder (no checkpoint of an interrupted attempt can pass for its own).
    stale = out / "triplet_hard-seed0" / "checkpoints" / "best-epoch=099.ckpt"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"stale")
    assert sweep.main(args) == 0
    assert not stale.exists()
    assert checkpoint.stat().st_mtime_ns == fitted_at
    rows = {(r["protocol"], r["metric"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert 0 <= float(rows["references", "eer"]["lsc_plus_mean"]) <= 1
    assert "Protocol `references`" in (out / "results.md").read_text()
    capsys.readouterr()
    assert sweep.main(args) == 0
    assert "lsc_plus-seed0: reusing" in capsys.readouterr().out

    # New evaluation settings: --retest replaces the reports, still without refitting.
    report = out / "lsc_plus-seed0" / "test-references" / "report.json"
    assert json.loads(report.read_text())["config"]["normalize"] == "center"
    assert sweep.main([*args, "--retest", "--protocols", "references", "--model.evaluation.normalize", "none"]) == 0
    assert json.loads(report.read_text())["config"]["normalize"] == "none"
    assert checkpoint.stat().st_mtime_ns == fitted_at
    # An ensemble is another evaluation: the model-alone reports are not reused for it, nor the fit refitted.
    member = str(out / "lsc_plus-seed0")  # the model with itself: same split, allowed
    assert sweep.main([*args, "--protocols", "references", "--model.inference.ensemble", f"[{member}]"]) == 0
    assert json.loads(report.read_text())["inference"]["ensemble"] == [member]
    assert checkpoint.stat().st_mtime_ns == fitted_at
    assert sweep.requested_inference(["--model.inference.ensemble=[a, b]", "--model.inference.features", "both"]) == {
        "ensemble": ["a", "b"], "features": "both"}
    # Other scored features are another evaluation too; without the option, the configs' own again (each step
    # follows one whose report another step would have reused: the ensemble's, then the model's alone).
    for features, option in (("embedding", []), ("backbone", ["--model.inference.features", "backbone"]), ("embedding", [])):
        assert sweep.main([*args, "--protocols", "references", *option]) == 0
        assert json.loads(report.read_text())["inference"] == {"features": features, "tta_shift": 0.0, "ensemble": []}
        assert "lsc_plus-seed0: reusing" not in capsys.readouterr().out
    assert sweep.main([*args, "--protocols", "references"]) == 0
    assert "lsc_plus-seed0: reusing" in capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == fitted_at
    with pytest.raises(SystemExit):  # "{fold}" without folds: refused before any work
        sweep.main([*args, "--model.inference.ensemble", "[x-fold{fold}]"])
    assert "names {fold}, but the sweep has no folds" in capsys.readouterr().err

    # Screening: validation signers only, a table of its own; the test reports are left alone.
    # A report in a folder without a finished fit belongs to no model: it is not reused (here the member
    # that cannot fit stays failed).
    tested = report.stat().st_mtime_ns
    stray = out / "triplet_hard-seed0" / "validate-pairs" / "report.json"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("{}")
    assert sweep.main([*args, "--screen", "--protocols", "pairs"]) == 0
    screen = (out / "screen-results.md").read_text()
    assert "Screening (`--screen`)" in screen and "| members finished / failed | 1 / 0 | 0 / 1 |" in screen
    split = json.loads((out / "lsc_plus-seed0" / "split.json").read_text())
    assert json.loads((out / "lsc_plus-seed0" / "validate-pairs" / "report.json").read_text())["n_signers"] == len(split["val"])
    assert report.stat().st_mtime_ns == tested and checkpoint.stat().st_mtime_ns == fitted_at


def test_a_report_is_reused_only_if_it_embedded_as_the_configs_and_options_say(tmp_path, monkeypatch):
    """How a member embeds is its configs' ``model.inference`` (cedar_grey_cpu's: the backbone's features) unless an
    option says otherwise, for a model fitted here and for one given with --ckpt (evaluated under this run's
    configs). The options come after the configs on the evaluation's command line: a preset read later would win."""
    called = []
    monkeypatch.setattr(sweep, "call", lambda command, log, mode: called.append(command))
    args = argparse.Namespace(out=str(tmp_path), preset="configs/presets/cedar_grey_cpu.yaml", extra=[], screen=False,
                              protocols=["references"], force=False, retest=False, data=None, folds=5, ckpt=None)
    run = tmp_path / sweep.member_name("triplet_hard", 0, 1)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best-epoch=1.ckpt").write_bytes(b"fitted")
    (run / sweep.FIT_DONE).write_text("{}")
    report = run / "test-references" / "report.json"
    report.parent.mkdir()

    def evaluations_after(**inference):
        report.write_text(json.dumps({"eer": 0.1, "inference": inference}))
        sweep.run_member("triplet_hard", 0, 1, args)
        return len(called)

    assert evaluations_after(features="embedding", tta_shift=0.0, ensemble=[]) == 1  # not what the preset scores
    assert evaluations_after(features="backbone", tta_shift=0.0, ensemble=[]) == 1
    args.extra = ["--model.inference.features", "both", "--model.inference.tta_shift", "5e-2"]
    assert evaluations_after(features="backbone", tta_shift=0.0, ensemble=[]) == 2
    assert called[-1][-4:] == args.extra and "--config" not in called[-1][-4:]
    assert evaluations_after(features="both", tta_shift=0.05, ensemble=[]) == 2  # "5e-2" is the number 0.05
    args.extra, args.ckpt = [], str(tmp_path / "elsewhere.ckpt")
    assert evaluations_after(features="embedding", tta_shift=0.0, ensemble=[]) == 3
    assert called[-1][called[-1].index("--ckpt_path") + 1] == args.ckpt
    assert evaluations_after(features="backbone", tta_shift=0.0, ensemble=[]) == 3


@pytest.mark.parametrize("bad, named", [(["--model.inference.tta_shift", "abc"], "tta_shift must be a number, got 'abc'"),
                                        (["--config", "no/such.yaml"], "no/such.yaml")])
def test_evaluation_settings_every_member_would_fail_on_are_refused_before_any_work(tmp_path, capsys, bad, named):
    with pytest.raises(SystemExit):
        sweep.main(["--losses", "lsc_plus", "--out", str(tmp_path / "s"), *bad])
    assert named in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_sweep_compares_experiment_configs():
    assert {"lsc_plus", "lsc_plus_hardest", "sct", "supcon", "triplet_hard", "triplet_semihard"} <= set(sweep.experiments())
    assert "base" not in sweep.experiments()


def test_a_stopped_sweep_leaves_the_table_of_its_finished_losses(tmp_path, monkeypatch):
    """The table is rewritten after each loss: a sweep killed by a time limit keeps what it finished."""
    def fake_member(loss, seed, fold, args):
        if loss == "sct":
            raise KeyboardInterrupt  # what a time limit's SIGINT does in the middle of a member
        return {p: {key: 0.25 for key, _, _ in sweep.ROWS} for p in args.protocols}

    monkeypatch.setattr(sweep, "run_member", fake_member)
    out = tmp_path / "sweep"
    assert sweep.main(["--losses", "supcon", "sct", "lsc_plus", "--out", str(out), "--protocols", "references"]) == 130
    text = (out / "results.md").read_text()
    assert "| metric | supcon |" in text and "| EER, a posteriori (test-chosen threshold) | 25.00 % |" in text
    assert "Not run yet (the sweep is still running, or was stopped): sct, lsc_plus." in text


def test_a_preset_ensemble_is_one_more_column(tmp_path, monkeypatch):
    """A preset's sweep.ensemble: its losses are the sweep's (when --losses is not given), and on each
    member their models are scored together, in a column and folders of their own."""
    calls = []

    def fake_member(loss, seed, fold, args, **how):
        run = Path(args.out) / (how.get("name") or sweep.member_name(loss, seed, fold))
        calls.append((loss, fold, how, (run / "report").is_file()))  # an earlier evaluation's report still there?
        run.mkdir(parents=True, exist_ok=True)
        if how or not (run / sweep.FIT_DONE).is_file():  # a fitted member is reused, as run_member does
            (run / ("report" if how else sweep.FIT_DONE)).write_text("{}")
        return {p: {key: 0.25 for key, _, _ in sweep.ROWS} for p in args.protocols}

    monkeypatch.setattr(sweep, "run_member", fake_member)
    preset, out = tmp_path / "ensemble.yaml", tmp_path / "sweep"
    preset.write_text(f"defaults: [{Path('configs/presets/cpu_tiny.yaml').resolve()}]\nsweep: {{ensemble: [sct, supcon]}}\n")
    base = ["--preset", str(preset), "--folds", "2", "--out", str(out), "--protocols", "references"]
    assert sweep.main(base) == 0
    assert "| metric | sct | supcon | ensemble |" in (out / "results.md").read_text()
    scored = [(fold, how, kept) for loss, fold, how, kept in calls if how]
    assert scored == [(f, {"name": f"ensemble-seed0-fold{f}", "ckpt": str(out / f"sct-seed0-fold{f}"),
                           "members": [str(out / f"supcon-seed0-fold{f}")]}, False) for f in (0, 1)]
    calls.clear()  # a rerun keeps the ensemble's reports (run_member reuses them), with more losses in the table
    assert sweep.main([*base, "--losses", "sct", "supcon", "lsc_plus"]) == 0
    assert "| sct | supcon | lsc_plus | ensemble |" in (out / "results.md").read_text()
    assert [kept for *_, how, kept in calls if how] == [True, True]
    with pytest.raises(SystemExit):
        sweep.main([*base, "--losses", "sct"])
    # Other fits make another ensemble, even where the reports' member lists agree (the first model is
    # not in them): a refitted member, or another first loss.
    calls.clear()
    (out / "supcon-seed0-fold1" / sweep.FIT_DONE).write_text('{"fit_seconds": 1}')
    os.utime(out / "supcon-seed0-fold1" / sweep.FIT_DONE, ns=(1, 1))
    assert sweep.main(base) == 0
    assert [(fold, kept) for _, fold, how, kept in calls if how] == [(0, True), (1, False)]
    calls.clear()
    preset.write_text(preset.read_text().replace("[sct, supcon]", "[lsc_plus, supcon]"))
    assert sweep.main(base) == 0
    assert [kept for *_, how, kept in calls if how] == [False, False]
    # One loss under two training seeds: its column fits both seeds' models; the ensemble scores them together.
    calls.clear()
    preset.write_text(preset.read_text().replace("[lsc_plus, supcon]}", "[sct], ensemble_seeds: 2}"))
    assert sweep.main(base) == 0
    assert (out / "sct-seed1-fold1" / sweep.FIT_DONE).is_file()
    assert [how for *_, how, _ in calls if how] == [
        {"name": f"ensemble-seed0-fold{f}", "ckpt": str(out / f"sct-seed0-fold{f}"),
         "members": [str(out / f"sct-seed1-fold{f}")]} for f in (0, 1)]
    assert "training seeds 2S to 2S + 1" in (out / "results.md").read_text()

    # A single run never sees the section; a preset's mistakes are named.
    from sigverify.config import compose
    assert "sweep" not in yaml.safe_load(compose("configs/sct.yaml", preset))
    for section, problem in (("{ensemble: [sct, nope]}", "nope, which have no configs"),
                             ("{ensemble: [sct]}", "two or more models"),
                             ("{ensemble: [sct, sct]}", "names sct twice"),
                             ("{ensemble: [sct], ensemble_seeds: 0}", "whole number >= 1"),
                             ("{ensemble: [sct], ensemble_seeds: 1.5}", "whole number >= 1"),
                             ("{ensemble_seeds: 2}", "needs sweep.ensemble"),
                             ("{members: [sct, supcon]}", "unknown key"),
                             ("{ensemble: supcon}", "must be a list of losses"),
                             ("true", "must be a mapping")):
        preset.write_text(f"sweep: {section}\n")
        with pytest.raises(ValueError, match=problem):
            sweep.preset_ensemble(preset)

    # One loss under several training seeds: the ensembles of two benchmark seeds share no model.
    preset.write_text("sweep: {ensemble: [sct], ensemble_seeds: 2}\n")
    ensemble = sweep.preset_ensemble(preset)
    assert ensemble.models(0) == [("sct", 0), ("sct", 1)] and ensemble.models(1) == [("sct", 2), ("sct", 3)]
    assert ensemble.training_seeds([0, 1]) == [0, 1, 2, 3]
    assert sweep.Ensemble(("sct", "supcon")).models(3) == [("sct", 3), ("supcon", 3)]  # one seed: the seed itself
    for shipped in Path("configs/presets").glob("*.yaml"):  # every shipped preset's section reads
        sweep.preset_ensemble(shipped)
    assert sweep.preset_ensemble("configs/presets/cedar_grey_cpu_224_ensemble.yaml") == sweep.Ensemble(("triplet_hard",), 2)
    assert sweep.Ensemble(("sct",)).training_seeds([1, 0]) == [1, 0]  # the loss columns keep --seeds' order


def test_a_folder_of_another_validation_scheme_is_refused_before_any_member_runs(tmp_path, monkeypatch):
    """k-fold members fitted with validation signers drawn another way (data.split.val_from) hold another split's
    thresholds. The sweep refuses their folder before it fits anything, and it reads the run's own scheme as
    ``sigverify fit`` resolves it: from an option, a ``--data.split`` mapping or an extra config file."""
    ran = []
    monkeypatch.setattr(sweep, "run_member", lambda loss, seed, fold, args: ran.append(fold) or {
        p: {key: 0.25 for key, _, _ in sweep.ROWS} for p in args.protocols})
    out = tmp_path / "sweep"
    for member, saved in (("sct-seed0-fold1", "test"), ("supcon-seed0-fold1", ".")):  # written before val_from: "front"
        (out / member / saved).mkdir(parents=True, exist_ok=True)
        (out / member / saved / "split.json").write_text(json.dumps({"config": {"mode": "kfold", "folds": 2, "fold": 1}}))
        (out / member / sweep.FIT_DONE).write_text("{}")
    base = ["--losses", "sct", "--folds", "2", "--out", str(out), "--protocols", "references"]
    with pytest.raises(SystemExit, match=r"drawn another way: sct-seed0-fold1 by data.split.val_from front, where this "
                                         r"run draws them by next_fold\. Repeat their split") as refused:
        sweep.main(base)
    assert "supcon" not in str(refused.value)  # a member of a loss this run does not have is not its concern
    assert ran == []  # not even fold 0, which had nothing to reuse
    assert sweep.main([*base, "--force"]) == 0 and ran == [0, 1]  # refitted from empty folders: nothing reused
    extra = tmp_path / "front.yaml"
    extra.write_text("data: {split: {val_from: front}}\n")
    for repeat in (["--data.split.val_from", "front"], ["--data.split", '{"val_from": "front"}'], ["--config", str(extra)]):
        ran.clear()
        assert sweep.main([*base, *repeat]) == 0, repeat
        assert ran == [0, 1], repeat


def test_a_run_kept_without_its_checkpoints_is_fitted_again_before_it_is_evaluated(tmp_path, monkeypatch):
    """An archive may keep a run's reports and marker but not its checkpoints (gpu_session.sh): its
    complete reports are reused; a missing one means a new fit, since nothing is left to evaluate."""
    import argparse

    run, steps = tmp_path / "triplet_hard-seed0-fold0", []

    def fake_call(command, log, mode):  # what the sigverify subprocess would leave behind
        steps.append(command[0])
        if command[0] == "fit":
            (run / "checkpoints").mkdir(parents=True)
            (run / "checkpoints" / "best-epoch=000.ckpt").write_text("")
        else:
            for protocol in ("pairs", "references"):
                (run / f"test-{protocol}").mkdir(exist_ok=True)
                (run / f"test-{protocol}" / "report.json").write_text('{"eer": 0.1}')

    monkeypatch.setattr(sweep, "call", fake_call)
    args = argparse.Namespace(out=str(tmp_path), screen=False, protocols=["pairs", "references"], extra=[], force=False,
                              retest=False, preset="configs/presets/cpu_tiny.yaml", data=None, folds=5)
    (run / "test-pairs").mkdir(parents=True)
    (run / "test-pairs" / "report.json").write_text('{"eer": 0.5}')  # the references evaluation was cut off
    (run / sweep.FIT_DONE).write_text("{}")
    reports = sweep.run_member("triplet_hard", 0, 0, args)
    assert steps == ["fit", "test"] and reports["pairs"]["eer"] == 0.1  # the old report went with the old fit
    shutil.rmtree(run / "checkpoints")
    steps.clear()
    assert sweep.run_member("triplet_hard", 0, 0, args)["references"]["eer"] == 0.1 and steps == []
