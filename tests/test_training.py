"""Training end to end on CPU: every config, resume, NaN guard, W&B offline histograms, bad configs."""
import glob
import json
import math
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from sigverify.cli import main
from sigverify.data.augment import AugmentConfig
from sigverify.data.datamodule import SamplerConfig, SignatureDataModule, SyntheticConfig
from sigverify.data.preprocess import PreprocessConfig
from sigverify.data.splits import SplitConfig
from sigverify.models.module import SignatureVerifier
from sigverify.training.callbacks import FiniteLossGuard, NonFiniteLossError

CONFIGS = sorted(p.name for p in Path("configs").glob("*.yaml") if p.name != "base.yaml")
TINY = ["--model.backbone", "test_efficientnet", "--model.head_hidden", "[32]", "--data.preprocess.height", "32",
        "--data.preprocess.width", "64", "--data.synthetic.signers", "12", "--data.synthetic.genuine", "4",
        "--data.synthetic.forgeries", "4", "--data.num_workers", "0", "--data.sampler.p", "4",
        "--trainer.enable_progress_bar", "false"]


def run_cli(tmp_path, *args):
    main([*args[:1], "--vars.runs_root", str(tmp_path / "runs"), *args[1:], "--data.cache_dir", str(tmp_path / "cache")])


def test_every_config_and_preset_is_documented():
    documented = Path("docs/training.md").read_text()
    presets = sorted(p.name for p in Path("configs/presets").glob("*.yaml"))
    assert [name for name in CONFIGS + presets if name not in documented] == []


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_dev_run_of_every_config(tmp_path, config):
    run_cli(tmp_path, "fit", "--config", f"configs/{config}", "--trainer.fast_dev_run", "true", *TINY)


# With TINY's backbone; a preset starting from packaged ImageNet weights runs with its own network in
# test_packaged_weights.py (the weights are those of its backbone only).
PRESETS = sorted(str(p) for p in Path("configs/presets").glob("*.yaml") if "weights_file: package" not in p.read_text())


@pytest.mark.parametrize("preset", PRESETS + ["configs/trainer/csv_only.yaml"])
def test_fast_dev_run_of_every_preset(tmp_path, preset):
    run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", "--config", preset, "--trainer.fast_dev_run", "true", *TINY)


def test_multiscale_neck_fast_dev_run(tmp_path):
    run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", "--trainer.fast_dev_run", "true", *TINY,
            "--model.neck", "multiscale", "--model.neck_stages", "2")


def test_default_backbone_fast_dev_run(tmp_path):
    """The shipped experiment, untouched but for a small input: tf_efficientnetv2_m, 1 channel, 256-d."""
    run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", "--trainer.fast_dev_run", "true",
            "--data.preprocess.height", "64", "--data.preprocess.width", "128", "--data.num_workers", "0",
            "--data.synthetic.signers", "10", "--data.synthetic.genuine", "4", "--data.synthetic.forgeries", "4",
            "--data.sampler.p", "2", "--trainer.enable_progress_bar", "false")


@pytest.mark.parametrize("channels_last, expected", [("true", "NHWC"), ("false", "NCHW")])
def test_sigverify_fit_computes_in_the_layout_channels_last_asks_for_on_a_cpu(tmp_path, channels_last, expected):
    """``model.channels_last`` holds on every device (it once held on GPUs only): training and validation steps."""
    run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", *TINY, "--vars.name", "layout",
            "--config", "configs/trainer/csv_only.yaml", "--trainer.callbacks+=layout_recorder.LayoutRecorder",
            "--model.channels_last", channels_last, "--trainer.max_epochs", "1", "--data.sampler.batches_per_epoch", "1")
    seen = json.loads((tmp_path / "runs" / "layout" / "layouts.json").read_text())
    assert seen == {"train": expected, "validate": expected}


@pytest.mark.slow
def test_run_folder_holds_config_split_checkpoints_logs_and_wandb_histograms(tmp_path):
    run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", "--vars.name", "r", "--trainer.max_epochs", "2",
            "--data.sampler.batches_per_epoch", "2", "--vars.group", "sweep-xyz", *TINY)
    run = tmp_path / "runs" / "r"
    for name in ("config.yaml", "split.json", "metrics.csv", "distributions.png", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert glob.glob(str(run / "checkpoints" / "best-*.ckpt"))
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["loss"] == "lsc_plus"
    header = (run / "metrics.csv").read_text().splitlines()[0]
    for column in ("val/eer", "val/auc", "val/loss", "train/n_hard", "train/pull_active_fraction",
                   *(f"{stage}/sim_{kind}" for stage in ("train", "val") for kind in ("genuine", "skilled", "other"))):
        assert column in header, column
    record = Path(glob.glob(str(run / "wandb" / "offline-run-*" / "*.wandb"))[0]).read_bytes()
    for name in (b"train/sim_genuine_hist", b"train/sim_skilled_hist", b"train/sim_other_hist", b"val/sim_skilled_hist"):
        assert re.search(re.escape(name) + rb'.{0,12}_type.{0,6}"histogram"', record, re.S), name
    assert b"sweep-xyz" in record and b"fit" in record  # the W&B group and job type
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["optimizer_states"] and checkpoint["val_threshold"] is not None
    # test/validate find the run's checkpoint in a fresh process, by name
    run_cli(tmp_path, "test", "--config", "configs/lsc_plus.yaml", "--vars.name", "r", "--ckpt_path", "best", *TINY)
    assert (run / "metrics.csv").read_text().splitlines()[0] == header  # training logs survive a test run
    assert "test/eer" in (run / "test" / "metrics.csv").read_text().splitlines()[0]
    report = json.loads((run / "test-pairs" / "report.json").read_text())
    assert report["threshold_source"].startswith("validation") and report["n_signers"] == 2
    assert 0 <= report["image_statistics_eer"] <= 1 and "validation signers" in report["hter_ci95_note"]
    assert "Shortcut floor" in (run / "test-pairs" / "report.md").read_text()
    history = json.loads((run / "distributions.json").read_text())["epochs"]
    assert len(history) == 2 and all(set(h["val"]) == {"genuine", "skilled", "other"} for h in history)
    # validate: figures on the validation signers only (screening), never the test signers
    run_cli(tmp_path, "validate", "--config", "configs/lsc_plus.yaml", "--vars.name", "r", "--ckpt_path", "best", *TINY)
    screen = json.loads((run / "validate-pairs" / "report.json").read_text())
    assert "validation signers themselves" in screen["threshold_source"]
    assert screen["n_signers"] == len(json.loads((run / "split.json").read_text())["val"]) != report["n_signers"]
    # Two protocols from one test run: the pairs report is the one a pairs-only run writes.
    run_cli(tmp_path, "test", "--config", "configs/lsc_plus.yaml", "--vars.name", "r", "--ckpt_path", "best", *TINY,
            "--model.evaluation.protocol", "references", "--model.evaluation.n_references", "2",
            "--model.evaluation.also_protocols", "[pairs]")
    both = {p: json.loads((run / f"test-{p}" / "report.json").read_text()) for p in ("pairs", "references")}
    assert both["pairs"]["eer"] == report["eer"] and both["pairs"]["n_genuine"] == report["n_genuine"]
    assert both["references"]["config"]["protocol"] == "references" and both["pairs"]["config"]["also_protocols"] == []
    assert both["references"]["n_genuine"] != both["pairs"]["n_genuine"]
    assert "test/pairs/eer" in (run / "test" / "metrics.csv").read_text().splitlines()[0]
    # A checkpoint given as a file: its network, but the command's evaluation settings (Lightning would
    # restore the stored ones and test the pairs protocol again); an ensemble of CLI-written checkpoints.
    best = glob.glob(str(run / "checkpoints" / "best-*.ckpt"))[0]
    run_cli(tmp_path, "test", "--config", "configs/lsc_plus.yaml", "--vars.name", "r", "--ckpt_path", best, *TINY,
            "--model.evaluation.protocol", "references", "--model.evaluation.n_references", "2",
            "--model.inference.ensemble", f"[{run / 'checkpoints' / 'last.ckpt'}]")
    report = json.loads((run / "test-references" / "report.json").read_text())
    assert report["config"]["n_references"] == 2
    assert report["inference"]["ensemble"] == [str(run / "checkpoints" / "last.ckpt")]
    # Under another split the file's model trained on some test signers: refused, unless the command allows it
    # (Lightning would restore the stored allow_seen_signers=false and ignore the command's).
    other = ["--config", "configs/lsc_plus.yaml", "--vars.name", "r-other", "--ckpt_path", best, *TINY,
             "--data.split.seed", "7"]
    with pytest.raises(ValueError, match="trained or validated on"):
        run_cli(tmp_path, "test", *other)
    with pytest.warns(UserWarning, match="allowed by model.allow_seen_signers"):
        run_cli(tmp_path, "test", *other, "--model.allow_seen_signers", "true")
    run_cli(tmp_path, "predict", "--config", "configs/lsc_plus.yaml", "--vars.name", "r", "--ckpt_path", "best", *TINY)
    saved = np.load(run / "predict" / "embeddings.npz")
    assert saved["embedding"].shape == (16, 256) and saved["genuine"].sum() == 8  # 2 test signers x (4 + 4)
    np.testing.assert_allclose(np.linalg.norm(saved["embedding"], axis=1), 1.0, rtol=1e-5)


def test_a_kfold_run_of_the_old_validation_scheme_is_tested_under_it(tmp_path):
    """A k-fold checkpoint fitted when validation signers came from the permutation's front (its stored settings
    predate `val_from`): export and the scoring screen rebuild the split it trained with; `sigverify test` under
    today's rotating scheme would validate on signers it trained on, so it is refused with the setting that
    repeats its split, and tests as fitted with it. A refusal for another reason (another fold) names no setting."""
    from benchmarks import scoring_screen
    from sigverify.models.checkpoint import TrainedCheckpoint

    kfold = ["--config", "configs/lsc_plus.yaml", "--vars.name", "old", *TINY, "--data.split.mode", "kfold",
             "--data.split.folds", "3", "--data.split.fold", "1"]
    run_cli(tmp_path, "fit", *kfold, "--data.split.val_from", "front", "--trainer.max_epochs", "1")
    fitted = json.loads((tmp_path / "runs" / "old" / "split.json").read_text())
    fitted = {part: fitted[part] for part in ("train", "val", "test")}
    path = tmp_path / "runs" / "old" / "checkpoints" / "last.ckpt"
    contents = torch.load(path, weights_only=True)
    del contents["datamodule_hyper_parameters"]["split"]["val_from"]  # as written before the setting existed
    torch.save(contents, path)
    rebuilt = TrainedCheckpoint.read(path).datamodule()
    rebuilt.setup("validate")
    assert rebuilt.split == fitted

    with pytest.raises(ValueError, match=r"trained or validated on.*--data\.split\.val_from front"):
        run_cli(tmp_path, "test", *kfold, "--ckpt_path", "last")
    run_cli(tmp_path, "test", *kfold, "--ckpt_path", "last", "--data.split.val_from", "front")
    tested = json.loads((tmp_path / "runs" / "old" / "test" / "split.json").read_text())
    assert {part: tested[part] for part in ("train", "val", "test")} == fitted
    with pytest.raises(ValueError, match="trained or validated on") as refused:
        run_cli(tmp_path, "test", *kfold[:-1], "2", "--ckpt_path", "last", "--data.split.val_from", "front")
    assert "val_from" not in str(refused.value)

    # Settings that rebuild other validation signers than the model's: the screen refuses the model, and a test
    # under the checkpoint's own scheme but another fold names no setting either.
    contents["datamodule_hyper_parameters"]["split"]["val_from"] = "next_fold"
    torch.save(contents, path)
    with pytest.raises(ValueError, match="trained or validated on"):
        scoring_screen.main(["--runs", str(path), "--folds", "1", "--features", "embedding"])
    with pytest.raises(ValueError, match="trained or validated on") as refused:
        run_cli(tmp_path, "test", *kfold[:-1], "2", "--ckpt_path", "last")
    assert "val_from" not in str(refused.value)


def test_unknown_names_list_the_choices(tmp_path, capsys):
    with pytest.raises(ValueError, match="valid choices: co_tuplet, lsc_plus"):
        run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", *TINY, "--model.loss", "nope")
    with pytest.raises(ValueError, match="unknown backbone 'tf_efficientnetv2_mm'.*tf_efficientnetv2_m"):
        run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", *TINY, "--model.backbone", "tf_efficientnetv2_mm")
    with pytest.raises(SystemExit):
        run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", *TINY, "--data.sampler.p", "many")
    assert "sampler.p" in capsys.readouterr().err


def test_a_run_saved_with_a_renamed_loss_argument_still_tests(served_model, tmp_path):
    """`sigverify test --ckpt_path` rebuilds the loss from the arguments the checkpoint was trained with: an LSC+ run
    saved before `pull_on` became `pull_positives` is tested, not refused."""
    from conftest import SERVED_TINY, cli

    checkpoint = torch.load(served_model[2], map_location="cpu", weights_only=True)
    arguments = checkpoint["hyper_parameters"]["loss_args"]
    arguments["pull_on"] = {"easy": "easiest", "hard": "hardest", "all": "all"}[arguments.pop("pull_positives")]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.warns(DeprecationWarning, match="pull_on is now pull_positives"):
        assert cli("test", "--config", "configs/lsc_plus.yaml", *SERVED_TINY, "--vars.runs_root", str(tmp_path / "runs"),
                   "--vars.name", "old", "--data.cache_dir", str(tmp_path / "cache"), "--ckpt_path", str(old)) == 0
    assert (tmp_path / "runs" / "old" / "test-references" / "report.json").is_file()


def test_settings_under_their_names_before_the_split_by_owner_still_work(served_model, tmp_path, caplog):
    """A checkpoint written when ``model.evaluation`` also held the inference and explanation settings is read under
    today's names (``TrainedCheckpoint`` and ``sigverify test --ckpt_path``); a config file and a command line that
    still use the old names work, told the new ones."""
    from sigverify.models.checkpoint import TrainedCheckpoint

    from conftest import SERVED_TINY, cli

    checkpoint = torch.load(served_model[2], map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["evaluation"] = {**hparams["evaluation"], "features": "both", "tta_shift": 0.0, "ensemble": [],
                             "explain": 0, "explain_sample": 200, "explain_method": "gradcam"}
    del hparams["inference"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    read = TrainedCheckpoint.read(old)
    assert read.inference.features == "both" and "features" not in read.evaluation and "explain" not in read.evaluation
    assert read.network(read.inference)(torch.zeros(2, 1, 32, 64, dtype=torch.uint8)).shape[1] > 32  # both: wider
    loaded = SignatureVerifier.load_from_checkpoint(old)  # Lightning's own loader, as a notebook would call it
    assert loaded.inference.features == "both" and not hasattr(loaded.evaluation, "features")
    assert SignatureVerifier.load_from_checkpoint(old, inference={"features": "backbone"}).inference.features == "backbone"

    # A run's config.yaml from before the split: old names, and the report writer as a callback list entry.
    old_config = tmp_path / "old.yaml"
    old_config.write_text("model: {evaluation: {tta_shift: 0.1}}\n"
                          "trainer: {callbacks: [{class_path: sigverify.training.callbacks.ReportWriter}]}\n")
    with caplog.at_level("WARNING", logger="sigverify"):
        assert cli("test", "--config", "configs/lsc_plus.yaml", "--config", str(old_config), *SERVED_TINY,
                   "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", "old", "--data.cache_dir",
                   str(tmp_path / "cache"), "--ckpt_path", str(old), "--model.evaluation.features", "backbone") == 0
    assert "model.evaluation.tta_shift is now model.inference.tta_shift" in caplog.text
    assert "model.evaluation.features is now model.inference.features" in caplog.text
    assert "trainer.callbacks lists ReportWriter" in caplog.text
    report = json.loads((tmp_path / "runs" / "old" / "test-references" / "report.json").read_text())
    assert report["inference"] == {"features": "backbone", "tta_shift": 0.1, "ensemble": []}  # the command's
    assert "features" not in report["config"] and "tta_shift" not in report["config"]


def test_old_names_on_the_command_line_get_the_new_ones_appends_included(caplog):
    from sigverify.cli import with_current_names

    with caplog.at_level("WARNING", logger="sigverify"):
        argv = with_current_names(["test", "--model.evaluation.ensemble+", "runs/a", "--model.evaluation.ensemble+=runs/b",
                                   "--model.evaluation.tta_shift=0.1", "--explain", "3", "--model.evaluation.bootstrap", "0"])
    assert argv == ["test", "--model.inference.ensemble+", "runs/a", "--model.inference.ensemble+", "runs/b",
                    "--model.inference.tta_shift", "0.1", "--report.explain.maps", "3", "--model.evaluation.bootstrap", "0"]
    assert "model.evaluation.ensemble is now model.inference.ensemble" in caplog.text


def test_an_old_name_in_an_earlier_config_file_gives_way_to_a_new_one_in_a_later_file(tmp_path):
    from sigverify.config import compose

    (tmp_path / "old.yaml").write_text("model: {evaluation: {tta_shift: 0.05, n_references: 4}}\n")
    (tmp_path / "new.yaml").write_text("model: {inference: {tta_shift: 0.1}}\n")
    composed = yaml.safe_load(compose(tmp_path / "old.yaml", tmp_path / "new.yaml"))["model"]
    assert composed == {"evaluation": {"n_references": 4}, "inference": {"tta_shift": 0.1}}
    composed = yaml.safe_load(compose(tmp_path / "new.yaml", tmp_path / "old.yaml"))["model"]
    assert composed["inference"] == {"tta_shift": 0.05}


@pytest.mark.parametrize("key, value", [
    ("model.evaluation.protocol", "triplets"), ("model.evaluation.normalize", "zscore"),
    ("model.evaluation.reduce", "median"), ("model.evaluation.lr_method", "isotonic"),
    ("model.evaluation.also_protocols", "[pair]"), ("model.inference.features", "head"),
    ("report.explain.method", "gradcam+")])
def test_the_cli_refuses_a_wrong_method_name_before_any_work(tmp_path, capsys, key, value):
    """Each owner's settings are typed: scoring (evaluation/), what embeds (models/), the maps (explain/)."""
    with pytest.raises(SystemExit):
        run_cli(tmp_path, "fit", "--config", "configs/lsc_plus.yaml", *TINY, f"--{key}", value)
    assert key in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused while parsing: nothing trained, nothing written


# -- programmatic runs: resume after a crash, NaN guard ----------------------------------------

def tiny_parts(tmp_path, **module_kwargs):
    data = SignatureDataModule(synthetic=SyntheticConfig(signers=12, genuine=4, forgeries=4), cache_dir=str(tmp_path / "cache"),
                               preprocess=PreprocessConfig(height=32, width=64), sampler=SamplerConfig(p=4, batches_per_epoch=3),
                               num_workers=0)
    model = SignatureVerifier(backbone="test_efficientnet", head_hidden=[32], warmup_epochs=1, **module_kwargs)
    return model, data


class LRRecorder(L.Callback):
    def __init__(self, die_at_step=None):
        self.lrs, self.die_at_step = {}, die_at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.die_at_step:
            raise RuntimeError("simulated crash mid-epoch")
        self.lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def trainer(tmp_path, name, recorder, max_epochs=4):
    last = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / name, filename="last", monitor=None)
    return L.Trainer(max_epochs=max_epochs, callbacks=[last, recorder, FiniteLossGuard()], logger=False,
                     enable_progress_bar=False,
                     default_root_dir=tmp_path / name, use_distributed_sampler=False, num_sanity_val_steps=0)


def test_resume_after_a_crash_continues_the_same_schedule(tmp_path):
    L.seed_everything(0)
    full = LRRecorder()
    model, data = tiny_parts(tmp_path)
    trainer(tmp_path, "full", full).fit(model, data)

    L.seed_everything(0)
    crashed = LRRecorder(die_at_step=7)  # in epoch 2 (3 steps per epoch): that epoch is lost
    model, data = tiny_parts(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(tmp_path, "resumed", crashed).fit(model, data)
    assert torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=True)["global_step"] == 6

    resumed = LRRecorder()
    model, data = tiny_parts(tmp_path)
    t = trainer(tmp_path, "resumed", resumed)
    t.fit(model, data, ckpt_path="last")
    assert min(resumed.lrs) == 6 and t.current_epoch == 4
    for step, lr in resumed.lrs.items():
        assert lr == pytest.approx(full.lrs[step]), step


def test_a_run_stopped_part_of_the_way_through_a_longer_schedule_keeps_its_learning_rates(tmp_path):
    """model.schedule_epochs: 2 epochs of a 4-epoch schedule are the first 2 epochs of the 4-epoch run."""
    runs = {}
    for name, epochs, schedule in (("full", 4, None), ("part", 2, 4), ("short", 2, None)):
        L.seed_everything(0)
        runs[name] = LRRecorder()
        model, data = tiny_parts(tmp_path, schedule_epochs=schedule)
        trainer(tmp_path, name, runs[name], max_epochs=epochs).fit(model, data)
    assert sorted(runs["part"].lrs) == list(range(6))
    for step, lr in runs["part"].lrs.items():
        assert lr == pytest.approx(runs["full"].lrs[step]), step
    assert runs["short"].lrs[5] < runs["part"].lrs[5]  # the 2-epoch schedule has decayed further
    with pytest.raises(ValueError, match="schedule_epochs .1. is shorter than trainer.max_epochs .2."):
        model, data = tiny_parts(tmp_path, schedule_epochs=1)
        trainer(tmp_path, "bad", LRRecorder(), max_epochs=2).fit(model, data)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    model, data = tiny_parts(tmp_path)
    real = model.loss_fn.forward

    def poisoned(embeddings, labels):
        out = real(embeddings, labels)
        if model.global_step == 4:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(model.loss_fn, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="global step 4"):
        trainer(tmp_path, "nan", LRRecorder()).fit(model, data)
    good = torch.load(tmp_path / "nan" / "last.ckpt", weights_only=True)
    assert good["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_short_fit_brings_validation_eer_far_below_its_initial_value(tmp_path):
    """A real learning test: LSC+ on synthetic signers, tiny backbone, ~400 steps on the CPU."""
    L.seed_everything(0)
    data = SignatureDataModule(synthetic=SyntheticConfig(signers=120, genuine=12, forgeries=12), cache_dir=str(tmp_path / "cache"),
                               preprocess=PreprocessConfig(height=64, width=128),
                               sampler=SamplerConfig(p=8, k=4, f=2, m=2, batches_per_epoch=50), num_workers=0,
                               split=SplitConfig(val_ratio=0.15), augment=AugmentConfig(enabled=False))
    model = SignatureVerifier(backbone="test_efficientnet", head_hidden=[128], dropout=0.1, weight_decay=1e-4,
                              warmup_epochs=1, loss="lsc_plus", lr=3e-3)
    t = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  use_distributed_sampler=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    initial = t.validate(model, data, verbose=False)[0]["val/eer"]
    t.fit(model, data)
    final = t.callback_metrics["val/eer"].item()
    print(f"validation EER: {initial:.3f} untrained -> {final:.3f} after training")
    assert initial > 0.35  # the untrained network is close to chance
    assert final <= initial - 0.10, (initial, final)


def test_init_from_an_earlier_run(tmp_path):
    """Fine-tuning after pretraining: the embedding network is taken from a checkpoint, nothing else."""
    model, data = tiny_parts(tmp_path)
    trainer(tmp_path, "pre", LRRecorder(), max_epochs=1).fit(model, data)
    ckpt = tmp_path / "pre" / "last.ckpt"
    tuned = SignatureVerifier(backbone="test_efficientnet", head_hidden=[32], init_from=str(ckpt))
    for (name, a), b in zip(model.embedder.state_dict().items(), tuned.embedder.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="does not match"):
        SignatureVerifier(backbone="test_efficientnet", head_hidden=[64], init_from=str(ckpt))
    with pytest.raises(FileNotFoundError):
        SignatureVerifier(backbone="test_efficientnet", init_from=str(tmp_path / "none.ckpt"))
    assert torch.load(ckpt, weights_only=True)["signer_split"]["test"] == data.split["test"]


def test_init_from_a_model_that_trained_on_this_runs_test_signers_is_refused(tmp_path):
    model, data = tiny_parts(tmp_path)
    data.split_config = SplitConfig(seed=5)  # pretrained with other signers in training
    trainer(tmp_path, "pre", LRRecorder(), max_epochs=1).fit(model, data)
    ckpt = str(tmp_path / "pre" / "last.ckpt")
    tuned, data = tiny_parts(tmp_path, init_from=ckpt)
    with pytest.raises(ValueError, match="model.init_from .* was trained or validated on"):
        trainer(tmp_path, "tuned", LRRecorder(), max_epochs=1).fit(tuned, data)
    tuned, data = tiny_parts(tmp_path, init_from=ckpt, allow_seen_signers=True)
    with pytest.warns(UserWarning, match="allowed"):
        trainer(tmp_path, "tuned", LRRecorder(), max_epochs=1).fit(tuned, data)


class WeightRecorder(L.Callback):
    """One parameter's value after every optimizer step."""

    def __init__(self, name):
        self.name, self.values = name, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(dict(pl_module.named_parameters())[self.name].detach().clone())


def test_ema_weights_are_what_is_validated_checkpointed_and_kept(tmp_path):
    decay, name = 0.6, "embedder.head.net.1.weight"
    model, data = tiny_parts(tmp_path, ema_decay=decay)
    recorder = WeightRecorder(name)
    trainer(tmp_path, "ema", recorder, max_epochs=2).fit(model, data)
    expected = recorder.values[0]
    for value in recorder.values[1:]:
        expected = decay * expected + (1 - decay) * value
    ckpt = torch.load(tmp_path / "ema" / "last.ckpt", weights_only=True)
    assert torch.allclose(ckpt["state_dict"][name], expected, atol=1e-6)
    assert not torch.allclose(ckpt["current_model_state"][name], expected)  # the raw weights are kept apart, for resuming
    assert torch.allclose(dict(model.named_parameters())[name].detach(), expected, atol=1e-6)  # after fit: the average

    class StartingWeights(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.value = dict(pl_module.named_parameters())[name].detach().clone()

    start = StartingWeights()
    model, data = tiny_parts(tmp_path, ema_decay=decay)
    trainer(tmp_path, "ema", start, max_epochs=3).fit(model, data, ckpt_path=str(tmp_path / "ema" / "last.ckpt"))
    assert torch.equal(start.value, ckpt["current_model_state"][name])  # resumed from the raw weights, not the average

    plain, data = tiny_parts(tmp_path)
    trainer(tmp_path, "plain", WeightRecorder(name), max_epochs=1).fit(plain, data)
    assert "current_model_state" not in torch.load(tmp_path / "plain" / "last.ckpt", weights_only=True)
    with pytest.raises(ValueError, match="ema_decay"):
        bad, data = tiny_parts(tmp_path, ema_decay=1.5)
        trainer(tmp_path, "bad", WeightRecorder(name), max_epochs=1).fit(bad, data)


def test_the_default_schedule_warms_up_linearly_then_follows_a_cosine(tmp_path):
    """The learning rate of every step of a real fit: warmup_start_lr to lr over warmup_epochs, then a cosine
    down to min_lr at the end of the run (the specification, written out here)."""
    recorder = LRRecorder()
    model, data = tiny_parts(tmp_path, lr=1e-3, warmup_start_lr=1e-4, min_lr=1e-6)
    trainer(tmp_path, "schedule", recorder, max_epochs=4).fit(model, data)
    warmup, total = 3, 12  # warmup_epochs 1 and 4 epochs, of 3 steps each
    for step, lr in recorder.lrs.items():
        expected = (1e-4 + (1e-3 - 1e-4) * step / warmup if step < warmup else
                    1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))
        assert lr == pytest.approx(expected, rel=1e-12), step


def test_the_optimizer_and_scheduler_come_from_the_config(tmp_path):
    """`sigverify fit` with another optimizer and scheduler named in YAML (class_path + init_args)."""
    config = tmp_path / "sgd.yaml"
    config.write_text("""model:
  optimizer:
    class_path: torch.optim.SGD
    init_args: {lr: 0.05, momentum: 0.9}
  scheduler:
    class_path: torch.optim.lr_scheduler.StepLR
    init_args: {step_size: 1, gamma: 0.5}
""")
    run_cli(tmp_path, "fit", "--config", "configs/triplet_hard.yaml", *TINY, "--config", str(config),
            "--trainer.max_epochs", "2", "--data.sampler.batches_per_epoch", "2", "--vars.name", "sgd",
            "--config", "configs/trainer/csv_only.yaml")
    state = torch.load(tmp_path / "runs" / "sgd" / "checkpoints" / "last.ckpt", weights_only=True)
    groups = state["optimizer_states"][0]["param_groups"]
    assert groups[0]["momentum"] == 0.9 and "betas" not in groups[0]  # SGD's, not AdamW's
    assert groups[0]["lr"] == pytest.approx(0.05 * 0.5 ** 2)  # halved after each of the two epochs
    assert state["lr_schedulers"][0]["step_size"] == 1


def test_norms_and_biases_can_be_left_out_of_the_weight_decay(tmp_path):
    model, data = tiny_parts(tmp_path, decay_norms_and_biases=False, weight_decay=0.01)
    trainer(tmp_path, "groups", LRRecorder(), max_epochs=1).fit(model, data)
    groups = model.trainer.optimizers[0].param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert (id(p) in decayed) == (p.ndim > 1), name  # weights decay; norms' scales and biases do not
