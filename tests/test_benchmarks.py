"""The benchmark scripts run end to end at toy size and end with their JSON line; repeat takes medians."""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import infer, repeat


def test_repeat_reports_medians_and_every_run(tmp_path, capsys):
    counter = tmp_path / "n"
    # Each run reads and bumps a counter, so the three runs report 10, 30 and 20 images/s.
    script = tmp_path / "bench.py"
    script.write_text(
        "import json, pathlib\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))\n"
        "print('warming up'); print(json.dumps({'device': 'cpu', 'batch': 64, 'img_s': [10.0, 30.0, 20.0][n]}))\n")
    assert repeat.main(["--runs", "3", "--", sys.executable, str(script)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["img_s"] == 20.0 and summary["img_s_all"] == [10.0, 30.0, 20.0]
    assert summary["device"] == "cpu" and summary["runs"] == 3
    assert summary["batch"] == 64 and "batch_all" not in summary  # a setting every run shares stays as it is


@pytest.mark.parametrize("code, message", [("raise SystemExit(3)", r"failed \(exit 3\)"), ("print('no json')", "not a JSON")])
def test_repeat_names_a_broken_benchmark(code, message):
    with pytest.raises(SystemExit, match=message):
        repeat.main(["--runs", "2", "--", sys.executable, "-c", code])


def test_infer_benchmark_runs_at_toy_size(synth_manifest, capsys, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    infer.main(["--backbone", "test_efficientnet", "--height", "32", "--width", "64", "--batch", "16", "--steps", "2",
                "--workers", "0", "--repeat", "2", "--manifest", str(synth_manifest)])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["repeat"] == 2 and figures["bare_img_s"] > 0 and figures["predict_img_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["predict_img_s"] / figures["bare_img_s"], rel=0.01)
    assert not any(cwd.iterdir())  # nothing left in the working directory (a split.json was)


def test_a_batch_too_large_for_memory_stops_with_a_message(capsys):
    from benchmarks import train

    with pytest.raises(SystemExit, match=r"batch 3000000 needs about .* GiB of memory on this CPU"):
        train.main(["--backbone", "test_efficientnet", "--height", "32", "--width", "64", "--p", "1000000",
                    "--k", "1", "--f", "1", "--m", "1"])
    assert "defaults for cpu: steps=10, warmup=3, workers=1" in capsys.readouterr().out


def test_the_train_benchmark_runs_at_toy_size_with_frozen_stages(capsys, tmp_path, monkeypatch):
    """Both paths of `benchmarks.train` with the first block stage frozen: the bare network's stem and stage
    take no gradient; the fit path runs; the JSON line says what ran."""
    import argparse

    from benchmarks import train

    network = train.bare_network(argparse.Namespace(backbone="test_efficientnet", freeze_stages=1, channels_last=True),
                                 torch.device("cpu"))
    frozen = [*network.conv_stem.parameters(), *network.bn1.parameters(), *network.blocks[0].parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in network.blocks[1].parameters())
    monkeypatch.chdir(tmp_path)
    train.main(["--backbone", "test_efficientnet", "--height", "32", "--width", "64", "--p", "4", "--k", "2",
                "--f", "1", "--m", "1", "--steps", "2", "--warmup", "1", "--workers", "0", "--freeze-stages", "1"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["freeze_stages"] == 1 and figures["batch_size"] == 16 and figures["channels_last"] is True
    assert figures["bare_img_s"] > 0 and figures["fit_img_s"] > 0


def test_device_defaults_fill_only_what_is_left_out():
    import argparse

    from benchmarks.common import apply_device_defaults
    from benchmarks.train import DEFAULTS

    args = argparse.Namespace(backbone=None, height=48, width=None, p=None, k=None, f=None, m=None, steps=None,
                              warmup=None, workers=None)
    apply_device_defaults(args, DEFAULTS, torch.device("cpu"))
    assert (args.backbone, args.height, args.width, args.p) == ("tf_efficientnetv2_b0", 48, 192, 8)
    apply_device_defaults(args, DEFAULTS, torch.device("cuda"))  # nothing left to fill
    assert args.backbone == "tf_efficientnetv2_b0"


def test_repeat_names_a_run_the_kernel_killed():
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(SystemExit, match="killed by signal SIGKILL.*out-of-memory"):
        repeat.main(["--runs", "1", "--", sys.executable, "-c", code])


@pytest.mark.slow
def test_accuracy_benchmark_summarises_the_folds_test_reports(tmp_path, monkeypatch, capsys, members_in_this_process):
    """`make bench-accuracy` at toy size: k folds fitted and tested, the JSON line their mean and std;
    `--screen` reads the validation signers and leaves the test reports alone; a new recipe gets its own folder."""
    from benchmarks import accuracy

    from test_sweep import TINY

    monkeypatch.setenv("SIGVERIFY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    args = ["--preset", "configs/presets/cpu_tiny.yaml", "--loss", "co_tuplet", "--folds", "2", "--out", str(out), *TINY]
    assert accuracy.main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("dataset", "preset", "folds", "protocol", "eer_mean", "eer_std", "hter_mean", "hter_std",
                "image_statistics_eer_mean", "train_minutes", "device"):
        assert key in line, key
    reports = [json.loads((out / f"co_tuplet-seed0-fold{f}" / "test-references" / "report.json").read_text()) for f in (0, 1)]
    assert line["eer_mean"] == pytest.approx(sum(r["eer"] for r in reports) / 2, abs=1e-4)
    assert line["hter_std"] == pytest.approx(abs(reports[0]["hter"] - reports[1]["hter"]) / 2, abs=1e-4)
    assert line["cllr_mean"] == pytest.approx(sum(r["likelihood_ratio"]["cllr"] for r in reports) / 2, abs=1e-4)
    assert line["stage"] == "test signers" and line["folds"] == 2 and line["train_minutes"] > 0
    pairs = [json.loads((out / f"co_tuplet-seed0-fold{f}" / "test-pairs" / "report.json").read_text())["eer"] for f in (0, 1)]
    assert line["other_protocols"]["pairs"]["eer_mean"] == pytest.approx(sum(pairs) / 2, abs=1e-4)

    tested = (out / "co_tuplet-seed0-fold0" / "test-references" / "report.json").stat().st_mtime_ns
    assert accuracy.main([*args, "--screen", "--protocol", "pairs"]) == 0
    screen = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert screen["stage"].startswith("validation signers") and screen["protocol"] == "pairs"
    assert (out / "co_tuplet-seed0-fold1" / "validate-pairs" / "report.json").is_file()
    assert (out / "co_tuplet-seed0-fold0" / "test-references" / "report.json").stat().st_mtime_ns == tested
    # Another recipe gets another folder, and a folder of another recipe is refused rather than reused.
    outs = {accuracy.parse(a).out for a in ([], ["--model.neck", "multiscale"], ["--folds", "4"], ["--data", "x.csv"])}
    assert len(outs) == 4
    with pytest.raises(SystemExit, match="holds co_tuplet members of another recipe .*folds"):
        accuracy.main([*args[:-len(TINY)], "--folds", "3", *TINY])
    assert line["reused_folds"] == 0 and screen["reused_folds"] == 2

    # A folder claimed by an earlier recipe format (the two files' bytes; the composed text and the options as
    # written) is taken over, not refused.
    claim = out / "bench-recipe-co_tuplet.json"
    for earlier in accuracy.EARLIER_CLAIMS:
        claim.write_text(json.dumps(earlier(accuracy.parse(args), "co_tuplet")))
        assert accuracy.main(args) == 0 and "training_config" in json.loads(claim.read_text())
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["eer_mean"] == line["eer_mean"]
    # A member fitted before k-fold validation signers rotated (its split.json has no val_from) holds another
    # split's thresholds: refused, not reused beside this run's folds.
    saved = out / "co_tuplet-seed0-fold1" / "split.json"
    split = json.loads(saved.read_text())
    assert split["config"].pop("val_from") == "next_fold"
    saved.write_text(json.dumps(split))
    with pytest.raises(SystemExit, match=r"co_tuplet-seed0-fold1 by data.split.val_from front, where this run draws them by next_fold"):
        accuracy.main(args)
    saved.write_text(json.dumps({**split, "config": {**split["config"], "val_from": "next_fold"}}))

    # --ckpt: one model trained on another data set evaluated on every fold, nothing fitted.
    from conftest import cli

    assert cli("fit", "--config", "configs/co_tuplet.yaml", "--config", "configs/presets/cpu_tiny.yaml", *TINY,
               "--data.synthetic.seed", "7", "--data.synthetic.signers", "14",  # another data set (fingerprint)
               "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", "other") == 0
    ckpt = next((tmp_path / "runs" / "other" / "checkpoints").glob("best*.ckpt"))
    transfer = tmp_path / "transfer"
    assert accuracy.main(["--preset", "configs/presets/cpu_tiny.yaml", "--loss", "co_tuplet", "--folds", "2",
                          "--out", str(transfer), "--ckpt", str(ckpt.parent.parent), *TINY]) == 0  # its run folder
    moved = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert moved["trained"].startswith("not on this data") and moved["train_minutes"] is None
    member = transfer / "co_tuplet-seed0-fold1"
    assert (member / "test-references" / "report.json").is_file() and not (member / "checkpoints").exists()

    # A preset naming an ensemble of losses: each fold fits the losses it lacks (co_tuplet's fits above are
    # the same composed recipe, so they are reused), then scores them together; an evaluation-only option
    # (one more member, the model trained elsewhere) reaches the evaluation, not the fits that refuse it.
    preset = tmp_path / "tiny_ensemble.yaml"
    preset.write_text(f"defaults: [{Path('configs/presets/cpu_tiny.yaml').resolve()}]\n"
                      "sweep: {ensemble: [co_tuplet, triplet_hard]}\n")
    fitted = {f: (out / f"co_tuplet-seed0-fold{f}" / "fit.done").stat().st_mtime_ns for f in (0, 1)}
    assert accuracy.main(["--preset", str(preset), "--folds", "2", "--out", str(out),
                          "--model.inference.ensemble", f"[{ckpt}]", *TINY]) == 0
    together = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert together["loss"] == "ensemble" and together["ensemble_of"] == ["co_tuplet", "triplet_hard"]
    reports = [json.loads((out / f"ensemble-seed0-fold{f}" / "test-references" / "report.json").read_text()) for f in (0, 1)]
    for fold, report in enumerate(reports):
        assert report["inference"]["ensemble"] == [str(out / f"triplet_hard-seed0-fold{fold}"), str(ckpt)]
        assert (out / f"co_tuplet-seed0-fold{fold}" / "fit.done").stat().st_mtime_ns == fitted[fold]
    assert together["eer_mean"] == pytest.approx(sum(r["eer"] for r in reports) / 2, abs=1e-4)
    fit_minutes = [sum(json.loads((out / f"{loss}-seed0-fold{f}" / "fit.done").read_text())["fit_seconds"]
                       for loss in ("co_tuplet", "triplet_hard")) / 60 for f in (0, 1)]
    assert together["train_minutes"] == pytest.approx(sum(fit_minutes) / 2, abs=0.01)
    assert together["reused_folds"] == 0  # triplet_hard was fitted now
    assert accuracy.main(["--preset", str(preset), "--folds", "2", "--out", str(out),
                          "--model.inference.ensemble", f"[{ckpt}]", *TINY]) == 0
    assert capsys.readouterr().out.count("ensemble-seed0-fold1: reusing its reports") == 1
    os.utime(ckpt, ns=(1, 1))  # the extra member retrained in place: the ensemble's reports are another model's
    assert accuracy.main(["--preset", str(preset), "--folds", "2", "--out", str(out),
                          "--model.inference.ensemble", f"[{ckpt}]", *TINY]) == 0
    assert "reusing" not in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an ensemble preset trains its own losses
        accuracy.parse(["--preset", str(preset), "--loss", "sct"])
    assert "names an ensemble (sweep.ensemble)" in capsys.readouterr().err

    # One loss under two training seeds (sweep.ensemble_seeds): seed 0's fits above are reused, seed 1's are
    # fitted, and the two are scored together in place of the ensemble of losses before.
    preset.write_text(preset.read_text().replace("[co_tuplet, triplet_hard]}", "[co_tuplet], ensemble_seeds: 2}"))
    assert accuracy.main(["--preset", str(preset), "--folds", "2", "--out", str(out), *TINY]) == 0
    seeds = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert seeds["ensemble_of"] == ["co_tuplet"] and seeds["ensemble_seeds"] == 2 and seeds["reused_folds"] == 0
    assert seeds["training_seeds"] == [0, 1]
    fit_minutes = [sum(json.loads((out / f"co_tuplet-seed{s}-fold{f}" / "fit.done").read_text())["fit_seconds"]
                       for s in (0, 1)) / 60 for f in (0, 1)]
    assert seeds["train_minutes"] == pytest.approx(sum(fit_minutes) / 2, abs=0.01)  # both seeds' fits
    for fold in (0, 1):
        report = json.loads((out / f"ensemble-seed0-fold{fold}" / "test-references" / "report.json").read_text())
        assert report["inference"]["ensemble"] == [str(out / f"co_tuplet-seed1-fold{fold}")]
        assert (out / f"co_tuplet-seed0-fold{fold}" / "fit.done").stat().st_mtime_ns == fitted[fold]


def test_untrained_scores_the_pretrained_starting_point_on_every_fold_without_a_fit(tmp_path, monkeypatch, capsys,
                                                                                     members_in_this_process):
    """`--untrained`: a recipe starting from a weights file, its network before any training tested on each
    fold (the backbone's pooled features, the fold's own threshold); the line's figures are those reports'."""
    import timm
    import torch

    from benchmarks import accuracy

    from test_sweep import TINY

    monkeypatch.setenv("SIGVERIFY_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "start.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    out = tmp_path / "bench"
    args = ["--preset", "configs/presets/cpu_tiny.yaml", "--folds", "2", "--out", str(out), *TINY]
    assert accuracy.main([*args, "--untrained", "--model.weights_file", str(weights)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    reports = {p: [json.loads((out / f"baseline-fold{f}" / f"test-{p}" / "report.json").read_text()) for f in (0, 1)]
               for p in ("references", "pairs")}
    assert line["trained"].startswith("not at all") and line["folds_finished"] == 2 and line["train_minutes"] is None
    assert line["eer_mean"] == pytest.approx(sum(r["eer"] for r in reports["references"]) / 2, abs=1e-4)
    assert line["other_protocols"]["pairs"]["hter_mean"] == pytest.approx(
        sum(r["hter"] for r in reports["pairs"]) / 2, abs=1e-4)
    assert all(r["inference"]["features"] == "backbone" for r in reports["references"])
    assert not list(out.glob("*/checkpoints"))  # nothing was fitted
    with pytest.raises(SystemExit):  # from random weights there is no starting point worth a baseline
        accuracy.parse([*args, "--untrained"])
    assert "needs a recipe that starts from pretrained weights" in capsys.readouterr().err


def test_the_untrained_baseline_is_scored_alone_beside_an_ensemble(tmp_path, monkeypatch, capsys):
    """Ensemble members given for the trained models (--model.inference.ensemble) are not the baseline's: its
    command leaves them out, and a baseline report once scored with members is made again, not reused."""
    from benchmarks import accuracy
    from sigverify import sweep
    from sigverify.evaluation.protocols import PROTOCOLS

    called = []
    monkeypatch.setattr(sweep, "call", lambda command, log, mode: called.append(command))
    args = accuracy.parse(["--preset", "configs/presets/cedar_grey_cpu.yaml", "--folds", "2", "--out", str(tmp_path),
                           "--model.inference.ensemble", "[sweeps/other/triplet_hard-seed1-fold{fold}]"])
    assert args.baseline
    reports = {p: tmp_path / "baseline-fold1" / f"test-{p}" / "report.json" for p in PROTOCOLS}
    for path in reports.values():
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"eer": 0.1, "inference": {"ensemble": ["sweeps/other/triplet_hard-seed1-fold1"]}}))
    accuracy.run_baseline(1, args)
    assert len(called) == 1 and not any("sweeps/other" in part for part in called[0]) and "baseline-fold1" in called[0]
    # after the configs, which would otherwise win: alone, by the backbone's features, unshifted as the trained models
    assert called[0][-6:] == ["--model.inference.features", "backbone", "--model.inference.ensemble", "[]",
                              "--model.inference.tta_shift", "0.0"]

    def scored(**inference):
        for path in reports.values():
            path.write_text(json.dumps({"eer": 0.1, "inference": inference}))

    scored(features="backbone", ensemble=[])  # the same reports, scored alone: reused
    assert accuracy.run_baseline(1, args)["references"]["eer"] == 0.1 and len(called) == 1
    scored(features="embedding", ensemble=[])  # the trained models' features are not the baseline's
    accuracy.run_baseline(1, args)
    assert len(called) == 2
    # Test-time shifts are the trained models' and the baseline's alike: a report without them is made again.
    shifted = accuracy.parse(["--preset", "configs/presets/cedar_grey_cpu.yaml", "--folds", "2", "--out", str(tmp_path),
                              "--model.inference.tta_shift", "5e-2"])
    scored(features="backbone", ensemble=[])
    accuracy.run_baseline(1, shifted)
    assert len(called) == 3 and called[-1][-1] == "0.05"
    scored(features="backbone", ensemble=[], tta_shift=0.05)
    accuracy.run_baseline(1, shifted)
    assert len(called) == 3
    for option in (["--model.inference.ensemble", "[sweeps/other/triplet_hard-seed1-fold{fold}]"],
                   ["--model.inference.features=both"]):
        with pytest.raises(SystemExit):
            accuracy.parse(["--preset", "configs/presets/cedar_grey_cpu.yaml", "--untrained", *option])
        err = capsys.readouterr().err
        assert "scores the untrained network alone" in err and option[0].split("=")[0] in err


def test_anchor_protocol_reads_the_test_scores_of_each_fold_and_seed(tmp_path, capsys):
    from benchmarks import anchor_protocol
    from sigverify.evaluation.metrics import eer, subset_eer

    rng = np.random.default_rng(0)
    written = {}
    for fold, seed in [(f, s) for f in range(2) for s in (0, 1)]:
        for protocol in ("pairs", "references"):
            folder = tmp_path / f"m-seed{seed}-fold{fold}" / f"test-{protocol}"
            folder.mkdir(parents=True)
            users = {"genuine": np.repeat(np.arange(6), 4), "skilled": np.repeat(np.arange(6), 5),
                     "random": np.repeat(np.arange(6), 2)}
            scores = {kind: rng.normal(1.0 if kind == "genuine" else 0.0, 1.0, len(u)) for kind, u in users.items()}
            np.savez(folder / "scores.npz", **scores, **{f"{k}_users": u for k, u in users.items()})
            written[fold, seed, protocol] = (scores, users)
    assert anchor_protocol.main(["--runs", str(tmp_path / "m-seed{seed}-fold{fold}"), "--folds", "2",
                                 "--seeds", "0", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for protocol in ("pairs", "references"):
        members = [v for (f, s, p), v in written.items() if p == protocol]
        subsets = [subset_eer(sc["genuine"], sc["skilled"], u["genuine"], u["skilled"])["eer_mean"] for sc, u in members]
        overall = [eer(sc["genuine"], sc["skilled"])[0] for sc, _ in members]
        assert line[protocol]["5_writer_subset_eer_mean"] == pytest.approx(np.mean(subsets), abs=1e-4)
        assert line[protocol]["all_test_writers_eer_mean"] == pytest.approx(np.mean(overall), abs=1e-4)
    with pytest.raises(SystemExit, match="no test scores"):
        anchor_protocol.main(["--runs", str(tmp_path / "m-seed{seed}-fold{fold}"), "--folds", "3"])


def test_a_stopped_accuracy_benchmark_still_summarises_the_folds_it_finished(tmp_path, monkeypatch, capsys):
    from benchmarks import accuracy

    def fold_then_stop(fold, seed, args):
        if fold == 2:
            raise KeyboardInterrupt  # what a time limit's SIGINT does in the middle of a fold
        return {p: {"eer": 0.1 * (fold + 1), "hter": 0.2} for p in accuracy.PROTOCOLS}

    monkeypatch.setattr(accuracy, "run_fold", fold_then_stop)
    assert accuracy.main(["--preset", "configs/presets/cpu_tiny.yaml", "--folds", "4", "--out", str(tmp_path)]) == 130
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["folds_finished"] == 2 and line["folds"] == 4
    assert line["eer_mean"] == pytest.approx(0.15) and line["train_minutes"] is None


def test_evaluation_only_options_are_kept_from_the_fit():
    from sigverify.sweep import member_options, split_evaluation_only

    # "{fold}" is each member's fold: per-fold ensemble members
    assert member_options(3, argparse.Namespace(extra=["--model.inference.ensemble", "[s/x-fold{fold}]", "--a", "b"])) == (
        ["--a", "b"], ["--model.inference.ensemble", "[s/x-fold3]"])

    assert split_evaluation_only(["--model.lr", "0.1", "--model.inference.ensemble", "[a.ckpt]", "--x=1",
                                  "--model.inference.features", "both", "--model.inference.tta_shift=0.05",
                                  "--model.inference.ensemble=[b]", "--flag"]) == (
        ["--model.lr", "0.1", "--x=1", "--flag"], ["--model.inference.ensemble", "[a.ckpt]", "--model.inference.features",
                                                   "both", "--model.inference.tta_shift=0.05", "--model.inference.ensemble=[b]"])


def test_evaluation_only_options_leave_the_recipe_and_its_folder_alone():
    """Scoring the finished fits another way (features, shifts, ensemble members) is the same recipe: same folder."""
    from benchmarks import accuracy

    base = ["--preset", "configs/presets/cedar_grey_cpu.yaml", "--folds", "5"]
    scored_otherwise = accuracy.parse([*base, "--model.inference.features", "backbone_and_untrained",
                                       "--model.inference.tta_shift", "0.05", "--model.inference.ensemble", "[x]"])
    assert scored_otherwise.out == accuracy.parse(base).out != accuracy.parse([*base, "--model.lr", "0.01"]).out


def test_a_recipe_is_its_training_config_however_it_is_spelled(tmp_path, monkeypatch, capsys):
    """A preset, or its base preset with the same settings as options (or as another --config), is one recipe, and
    so is an option repeating a default; a value changed anywhere, also inside a mapping or a class's arguments,
    is another recipe. A folder named by the recipe as an earlier version wrote it is still found."""
    from benchmarks import accuracy

    def recipes(*argv):
        return accuracy.parse(["--folds", "5", *argv]).recipes

    grey = ["--preset", "configs/presets/cedar_grey_cpu.yaml"]
    written_out = recipes("--preset", "configs/presets/cedar_grey_cpu_224.yaml")
    settings = tmp_path / "224.yaml"
    settings.write_text("data:\n  preprocess: {width: 448}\n")
    assert written_out == recipes(*grey, "--config", str(settings), "--data.preprocess.height=224",
                                  "--data.preprocess.ink_tone", "keep", "--model.frozen_bn_stats", "keep")
    assert written_out != recipes(*grey, "--config", str(settings), "--data.preprocess.height=224",
                                  "--data.preprocess.ink_tone", "keep")
    lsc = ["--loss", "lsc_plus_hardest", *grey]
    assert recipes(*lsc, "--model.loss_args", "{margin: 0.5}") != recipes(*lsc, "--model.loss_args",
                                                                          "{margin: 0.5, pull_positives: hard}")
    assert (recipes(*grey, "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.01")
            != recipes(*grey, "--model.optimizer", "torch.optim.AdamW", "--model.optimizer.lr", "0.01"))
    # per-fold values: one key's is not another's
    assert recipes(*grey, "--data.augment.elastic_p", "0.{fold}") != recipes(*grey, "--model.drop_path_rate", "0.{fold}")
    # what the benchmark sets per member cannot come in as an option, nor through a config among the options
    for option in (["--seed_everything", "5"], ["--data.root", "x.csv"], ["--data.split.fold", "3"], ["--vars.name", "x"]):
        with pytest.raises(SystemExit):
            recipes(*grey, *option)
        assert f"{option[0]} is set by the benchmark for each member" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # inside a mapping
        recipes(*grey, "--data.split", "{mode: kfold, folds: 5, fold: 3}")
    assert "override what the benchmark sets for each member (data.split.fold)" in capsys.readouterr().err
    # a folder of another recipe is refused, naming the settings that differ
    args = accuracy.parse([*grey, "--out", str(tmp_path / "claimed")])
    accuracy.claim_folder(args, "triplet_hard")
    with pytest.raises(SystemExit, match=r"another recipe \(model.weight_decay differ"):
        accuracy.claim_folder(accuracy.parse([*grey, "--out", str(tmp_path / "claimed"), "--model.weight_decay", "0.5"]),
                              "triplet_hard")

    monkeypatch.chdir(tmp_path)  # an earlier version's folder of this recipe, in a fresh sweeps/
    for folder in ("configs", "benchmarks"):
        (tmp_path / folder).symlink_to(Path(__file__).parents[1] / folder)
    args = accuracy.parse([*grey, "--vars.patience"])  # an option missing its value: resolving still fits nothing
    assert not (tmp_path / "sweeps").exists()
    args = accuracy.parse(grey)
    earlier = accuracy.digest({"triplet_hard": accuracy.recipe_as_written(args, "triplet_hard")})
    assert earlier not in args.out
    (tmp_path / f"sweeps/bench-cedar_grey_cpu-triplet_hard-{earlier}").mkdir(parents=True)
    assert accuracy.parse(grey).out.endswith(earlier)


def test_identify_benchmark_reports_a_recall_latency_curve(capsys):
    """The identify benchmark at toy size, through the service's own query: one curve point per candidate count,
    the first one the headline; clustered signers are found."""
    from benchmarks import identify

    identify.main(["--vectors", "3000", "--queries", "30", "--warmup", "10", "--candidates", "20", "5",
                   "--breadth", "40", "100", "--shared-buffers-mb", "128"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(point["breadth"], point["candidates"]) for point in line["curve"]] == [(40, 20), (40, 5), (100, 20), (100, 5)]
    assert line["p95_ms"] == line["curve"][0]["p95_ms"] and line["index_build_s"] is not None
    assert all(point["queries"] == 30 and point["recall_at_1"] >= 0.9 for point in line["curve"])


def test_signers_the_service_benchmark_loads_are_stored_as_enrolment_leaves_them(tmp_path):
    """The bulk load (COPY, no enrolment) fills each signer's centroid, which identify searches first."""
    import psycopg
    from pgvector.psycopg import register_vector

    from benchmarks import service
    from sigverify.serving.embedded import EmbeddedDatabase
    from sigverify.serving.store import SignatureStore, migrate

    database, dim = EmbeddedDatabase(tmp_path / "db", supervise=False), 8
    try:
        migrate(database.dsn, "bench", dim)
        service.load_signers(database.dsn, 4, 3, dim, seed=1)
        with psycopg.connect(database.dsn) as conn:
            register_vector(conn)
            references = conn.execute("SELECT signer_id, embedding FROM signature_references").fetchall()
            centroids = dict(conn.execute("SELECT id, centroid FROM signers").fetchall())
        assert len(references) == 12 and len(centroids) == 4
        for signer, centroid in centroids.items():
            mean = np.mean([vector.to_numpy() for owner, vector in references if owner == signer], axis=0)
            np.testing.assert_allclose(centroid.to_numpy(), mean, atol=1e-6)
        store = SignatureStore(database.dsn, "bench", dim)
        try:
            probe = next(vector for owner, vector in references if owner == "load-000002").to_numpy()
            assert store.nearest_signers(probe, 1)[0]["signer_id"] == "load-000002"  # signers lacking one are skipped
        finally:
            store.close()
    finally:
        database.close()


def test_the_scoring_screen_reproduces_validate_and_scores_every_choice(tmp_path, capsys):
    """The screen's plain figure (embedding, references protocol, centred) is what `sigverify validate` reports
    for the same run, and with --test what `sigverify test` reports; every features x normalisation choice gets
    a figure."""
    from benchmarks import scoring_screen

    from conftest import SERVED_TINY, cli

    common = ["--config", "configs/lsc_plus.yaml", *SERVED_TINY, "--vars.runs_root", str(tmp_path / "runs"),
              "--vars.name", "fold0", "--data.cache_dir", str(tmp_path / "cache"), "--data.split.mode", "kfold",
              "--data.split.folds", "2", "--data.split.fold", "0", "--data.split.min_val", "3"]
    assert cli("fit", *common, "--trainer.max_epochs", "1", "--data.sampler.batches_per_epoch", "2") == 0
    assert cli("validate", *common, "--ckpt_path", "best") == 0
    validated = json.loads((tmp_path / "runs" / "fold0" / "validate-references" / "report.json").read_text())
    capsys.readouterr()
    assert scoring_screen.main(["--runs", str(tmp_path / "runs" / "fold{fold}"), "--folds", "1", "--top-k", "0", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The screen embeds in the run's evaluation batches, as `sigverify validate` does (a convolution's float
    # rounding depends on the batch size, and a model fitted on 2 batches scores many pairs almost alike, so
    # other batches flipped a few near-tied decisions): the same figure, to the screen's 4 decimals.
    assert line["eer"]["embedding/references/center"]["mean"] == pytest.approx(validated["eer"], abs=1e-4)
    expected = {f"{f}/{p}/{n}" for f in ("embedding", "backbone", "both")
                for p, names in (("references", ("center", "snorm", "asnorm3")), ("pairs", ("raw", "snorm", "asnorm3")))
                for n in names}
    assert set(line["eer"]) == expected and all(0 <= v["mean"] <= 1 for v in line["eer"].values())
    # One feature choice, with the writer-dependent SVM, and the test signers for the two rows named: only
    # this choice's rows, the validation figures unchanged, and the test figures of the named rows alone, those
    # `sigverify test` reports for the centred scoring.
    chosen = {"embedding/references/center", "embedding/references/writer_svm"}
    assert scoring_screen.main(["--runs", str(tmp_path / "runs" / "fold{fold}"), "--folds", "1", "--top-k", "0",
                                "--features", "embedding", "--writer-svm", "--test", *sorted(chosen)]) == 0
    only = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {"embedding/references/center", "embedding/references/writer_svm", "embedding/references/snorm",
            "embedding/pairs/raw", "embedding/pairs/snorm"}
    assert set(only["eer"]) == rows and set(only["test_eer"]) == set(only["test_hter"]) == chosen
    with pytest.raises(SystemExit):  # a row the screen does not have (backbone features are not screened here)
        scoring_screen.main(["--runs", str(tmp_path / "runs" / "fold{fold}"), "--features", "embedding",
                             "--test", "backbone/references/center"])
    assert "not a row of this screen" in capsys.readouterr().err
    assert only["eer"]["embedding/references/center"] == line["eer"]["embedding/references/center"]
    assert cli("test", *common, "--ckpt_path", "best") == 0
    tested = json.loads((tmp_path / "runs" / "fold0" / "test-references" / "report.json").read_text())
    assert only["test_eer"]["embedding/references/center"]["mean"] == pytest.approx(tested["eer"], abs=1e-4)
    assert only["test_hter"]["embedding/references/center"]["mean"] == pytest.approx(tested["hter"], abs=1e-4)
    assert all(0 <= v["mean"] <= 1 for v in only["test_hter"].values())


def test_the_scoring_screens_pairing_with_the_untrained_start_is_what_validate_scores(tmp_path, capsys):
    """``--features backbone_and_untrained`` (a run that started from a weights file): the screen joins the
    trained backbone's and the starting point's features itself, and gets the figure `sigverify validate
    --model.inference.features backbone_and_untrained` reports."""
    import timm
    import torch

    from benchmarks import scoring_screen
    from sigverify.models.inference import WITH_UNTRAINED

    from conftest import SERVED_TINY, cli

    weights = tmp_path / "start.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    common = ["--config", "configs/lsc_plus.yaml", *SERVED_TINY, "--vars.runs_root", str(tmp_path / "runs"),
              "--vars.name", "fold0", "--data.cache_dir", str(tmp_path / "cache"), "--data.split.mode", "kfold",
              "--data.split.folds", "2", "--data.split.fold", "0", "--data.split.min_val", "3",
              "--model.weights_file", str(weights)]
    assert cli("fit", *common, "--trainer.max_epochs", "1", "--data.sampler.batches_per_epoch", "2") == 0
    assert cli("validate", *common, "--ckpt_path", "best", "--model.inference.features", WITH_UNTRAINED) == 0
    validated = json.loads((tmp_path / "runs" / "fold0" / "validate-references" / "report.json").read_text())
    capsys.readouterr()
    assert scoring_screen.main(["--runs", str(tmp_path / "runs" / "fold{fold}"), "--folds", "1", "--top-k",
                                "--features", "backbone", WITH_UNTRAINED]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["eer"][f"{WITH_UNTRAINED}/references/center"]["mean"] == pytest.approx(validated["eer"], abs=1e-4)
    # no cohort size: the uncohorted rows alone
    assert set(line["eer"]) == {f"{f}/{p}" for f in ("backbone", WITH_UNTRAINED) for p in ("references/center", "pairs/raw")}


def _lightened_copy(manifest: Path, folder: Path) -> Path:
    """The same signatures with their ink half as dark (a paler pen), as another data set."""
    from dataclasses import replace

    from PIL import Image

    from sigverify.data.manifest import read_manifest, write_manifest

    records = []
    for r in read_manifest(manifest):
        page = np.asarray(Image.open(r.path).convert("L"), np.float32)
        target = folder / r.path.relative_to(manifest.parent.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - (255 - page) * 0.5).astype(np.uint8)).save(target)
        records.append(replace(r, path=target.resolve()))
    return write_manifest(records, folder / "manifest.csv")


def test_dataset_floor_names_a_pen_cue_and_the_ink_tone_control_removes_it(tmp_path, capsys):
    """Two draws of one generator are hard to tell apart; a copy with paler ink is told apart by its mean ink
    grey, on grey input, until the ink tone is equalised."""
    from benchmarks import dataset_floor
    from sigverify.data.synth import synthesize_dataset

    first = synthesize_dataset(tmp_path / "first", signers=10, genuine=4, forgeries=2, seed=1)
    second = synthesize_dataset(tmp_path / "second", signers=10, genuine=4, forgeries=2, seed=2)
    pale = _lightened_copy(first, tmp_path / "pale")
    common = ["--height", "32", "--width", "64", "--workers", "0", "--cache-dir", str(tmp_path / "cache")]

    def figures(*options):
        assert dataset_floor.main([*common, *options]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    same_source = figures("--manifests", str(first), str(second), "--grey")
    paler_pen = figures("--manifests", str(first), str(pale), "--grey")
    equalised = figures("--manifests", str(first), str(pale), "--grey", "--ink-tone", "equalize")
    assert same_source["datasets"] == ["first", "second"] and same_source["images"] == [60, 60]
    assert same_source["balanced_accuracy"] < 0.75
    assert paler_pen["statistic_auc"]["mean_ink_grey"] > 0.95 and paler_pen["balanced_accuracy"] > 0.9
    assert equalised["statistic_auc"]["mean_ink_grey"] < 0.7 and equalised["balanced_accuracy"] < 0.7
    with pytest.raises(SystemExit):
        dataset_floor.main(["--manifests", str(first)])
