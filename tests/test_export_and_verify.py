"""`sigverify export` and `sigverify verify`, through the commands a user runs: a model trained by
`sigverify fit`, tested by `sigverify test`, exported, then verifying image files without torch."""
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from sigverify.evaluation.protocols import score_against_references
from sigverify.models.checkpoint import TrainedCheckpoint
from sigverify.models.embedding import SignatureEmbedder, embed_images
from sigverify.models.inference import InferenceConfig
from sigverify.serving.export import export_onnx, onnx_embed
from sigverify.serving.model_dir import CALIBRATION, CARD, CONFIG, ONNX, WEIGHTS, ModelDirError, ScoringProtocol, read_model_dir
from sigverify.serving.verifier import Verifier

from conftest import SERVED_TINY, cli, signer_files


def test_export_writes_a_hub_style_folder_with_the_validation_threshold(served_model):
    tmp, run, ckpt, model_dir = served_model
    for name in (CONFIG, WEIGHTS, ONNX, CALIBRATION, CARD):
        assert (model_dir / name).is_file(), name
    model = read_model_dir(model_dir)
    config = model.config
    report = json.loads((run / "test-references" / "report.json").read_text())
    # the threshold `sigverify test` chose on the validation signers is the one the folder serves
    assert model.threshold == pytest.approx(report["threshold"], abs=1e-9)
    assert config.protocol == ScoringProtocol(name="references", reduce="mean", normalize="center",
                                              n_references_validated=3)
    assert config.split == TrainedCheckpoint.read(ckpt).split
    assert config.backbone == "test_efficientnet" and config.embedding_dim == 32
    assert config.preprocess.height == 32 and len(config.training_config_sha256) == 64
    assert config.onnx.max_abs_difference_to_pytorch <= 1e-4
    # calibration: the validation scores the threshold came from, with its rates there
    assert model.calibration.far_at(model.threshold) == pytest.approx(config.threshold.far_skilled)
    assert model.calibration.frr_at(model.threshold) == pytest.approx(config.threshold.frr)
    card = (model_dir / CARD).read_text()
    assert card.startswith("---\nlibrary_name: sigverify") and f"{report['n_signers']} test signers" in card


def test_onnx_matches_pytorch_and_safetensors_reload_the_network(served_model):
    tmp, run, ckpt, model_dir = served_model
    from safetensors.torch import load_file

    dm = TrainedCheckpoint.read(ckpt).datamodule()
    dm.setup("test")
    images = np.asarray(dm.images[dm.positions("test")])  # real preprocessed images, not random tensors
    network = SignatureEmbedder("test_efficientnet", hidden=[32], dim=32)
    network.load_state_dict(load_file(str(model_dir / WEIGHTS)))
    with torch.no_grad():
        expected = network.eval()(torch.from_numpy(images[:, None])).numpy()
    assert np.abs(Verifier(model_dir).embed(images) - expected).max() <= 1e-4


def test_shift_averaged_networks_export_with_any_batch_size(served_model, tmp_path):
    tmp, run, ckpt, model_dir = served_model
    network = TrainedCheckpoint.read(ckpt).network(InferenceConfig(tta_shift=0.1))
    export_onnx(network, 32, 64, tmp_path / "tta.onnx")
    images = torch.randint(0, 256, (5, 32, 64), dtype=torch.uint8).numpy()
    with torch.no_grad():
        expected = network(torch.from_numpy(images[:, None])).numpy()
    assert np.abs(onnx_embed(tmp_path / "tta.onnx", images) - expected).max() <= 1e-4


def test_verify_scores_as_sigverify_test_does(served_model):
    """One scoring rule: the command's score equals the test protocol's function applied to the
    embeddings `sigverify predict` wrote for the same images."""
    tmp, run, ckpt, model_dir = served_model
    genuine, forged, rows = signer_files(served_model)
    predicted = np.load(run / "predict" / "embeddings.npz")["embedding"].astype(np.float64)
    references, questioned = genuine[:3], forged[0]
    done = subprocess.run([sys.executable, "-m", "sigverify.cli", "verify", "--model", str(model_dir), "--reference",
                           *references, "--questioned", questioned], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    ref_rows, q_row = rows[:3], rows[len(genuine)]
    expected = score_against_references(predicted[[q_row]], predicted[ref_rows], "mean", "center")[0]
    assert verdict["score"] == pytest.approx(expected, abs=1e-5)
    assert verdict["similarities"] == pytest.approx(list(predicted[ref_rows] @ predicted[q_row]), abs=1e-5)
    assert verdict["distance"] == pytest.approx(1 - np.mean(verdict["similarities"]), abs=1e-9)
    assert verdict["decision"] == ("genuine" if verdict["score"] >= verdict["threshold"] else "forgery")
    if abs(expected - verdict["threshold"]) > 1e-5:  # a score at the threshold may fall either side of it in float32
        assert verdict["decision"] == ("genuine" if expected >= verdict["threshold"] else "forgery")
    assert 0.0 <= verdict["confidence"] <= 1.0 and verdict["threshold"] == read_model_dir(model_dir).threshold
    assert verdict["n_references_validated"] == 3 and verdict["calibrated"]  # 3 references, as validated


def test_verify_runs_without_torch(served_model):
    """Verification and the service import nothing of the training install (`sigverify[serve]` suffices)."""
    tmp, run, ckpt, model_dir = served_model
    genuine, forged, _ = signer_files(served_model)
    code = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"torch", "lightning", "timm", "torchvision", "torchmetrics", "albumentations",
                                   "sklearn", "matplotlib", "wandb", "jsonargparse", "omegaconf", "safetensors"}}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocked())
import sigverify.serving.app, sigverify.serving.store  # the service too: what `sigverify[serve]` installs
from sigverify.cli import main
main(["verify", "--model", {str(model_dir)!r}, "--reference", *{genuine[:3]!r}, "--questioned", {genuine[3]!r}])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["decision"] in ("genuine", "forgery")


def test_bad_inputs_name_the_file(served_model, tmp_path, capsys):
    tmp, run, ckpt, model_dir = served_model
    genuine, _, _ = signer_files(served_model)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert cli("verify", "--model", str(model_dir), "--reference", *genuine[:2], "--questioned", str(text)) == 1
    assert str(text) in capsys.readouterr().err
    # writer normalisation needs 2 references
    assert cli("verify", "--model", str(model_dir), "--reference", genuine[0], "--questioned", genuine[1]) == 1
    assert "at least 2 references" in capsys.readouterr().err
    with pytest.raises(ModelDirError, match="model.onnx: missing"):
        broken = tmp_path / "broken"
        broken.mkdir()
        for name in (CONFIG, CALIBRATION):
            (broken / name).write_bytes((model_dir / name).read_bytes())
        read_model_dir(broken)
    # export never overwrites a folder unless asked, and a failed export leaves nothing behind
    assert cli("export", "--ckpt", ckpt, "--out", str(model_dir)) == 1
    assert "already exists" in capsys.readouterr().err and (model_dir / ONNX).is_file()
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp_path / "m"), "--data", str(tmp_path / "none.csv")) == 1
    assert "none.csv" in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert not list(tmp_path.glob(".export-*"))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("threshold"), "no threshold entry"),
    (lambda c: c["protocol"].pop("normalize"), "no protocol.normalize entry"),
    (lambda c: c.update(calibrated_on="?"), "unknown entries calibrated_on"),
    (lambda c: c["preprocess"].update(ink_tone="sepia"), "preprocess: ink_tone must be one of"),
    (lambda c: c.update(protocol=[1]), r"protocol is \[1\], not an object"),
    (lambda c: c["protocol"].update(name="triplets"), "protocol.name is 'triplets', not one of 'pairs', 'references'"),
    (lambda c: c["protocol"].update(reduce="median"), "protocol.reduce is 'median', not one of 'mean', 'max'"),
    (lambda c: c["threshold"].update(value="0.5"), "threshold.value is '0.5', not a number"),
    (lambda c: c["protocol"].update(n_references_validated="3"), "n_references_validated is '3', not an integer"),
    (lambda c: c.update(head_hidden=None), "head_hidden is None, not a list of an integer"),
    (lambda c: c.update(evaluation=None), "evaluation is None, not an object"),
    (lambda c: c.update(split=None), "split is None, not an object"),
])
def test_config_json_is_read_as_typed_settings_and_a_bad_entry_names_the_file(served_model, tmp_path, change, message):
    """config.json is written from one typed ModelConfig and read back into it unchanged; an entry missing,
    unknown or invalid is refused with the file and the entry, not met later as a KeyError mid-request."""
    model_dir = served_model[3]
    model = read_model_dir(model_dir)
    written = json.loads((model_dir / CONFIG).read_text())
    assert model.config.to_json() == written  # every entry read back, nothing dropped or added
    assert model.config.preprocess.height == written["preprocess"]["height"] and model.config.head_hidden == tuple(written["head_hidden"])
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    change(written)
    (broken / CONFIG).write_text(json.dumps(written))
    with pytest.raises(ModelDirError, match=message) as raised:
        read_model_dir(broken)
    assert str(broken / CONFIG) in str(raised.value)


def test_a_config_json_from_before_the_evaluation_entry_still_loads(served_model, tmp_path):
    """Folders exported before config.json recorded the evaluation settings scored the embedding; those exported
    before the scored features had their own entry kept them in the evaluation settings."""
    older = tmp_path / "older"
    shutil.copytree(served_model[3], older)
    written = json.loads((older / CONFIG).read_text())
    assert written["format_version"] == 2
    del written["evaluation"], written["features"]
    written["format_version"] = 1
    (older / CONFIG).write_text(json.dumps(written))
    model = read_model_dir(older)
    assert model.config.evaluation == {} and model.config.features == "embedding"
    genuine, forged, _ = signer_files(served_model)
    verdict = Verifier(older).verify_files(genuine[:3], forged[0])
    assert verdict.score == Verifier(served_model[3]).verify_files(genuine[:3], forged[0]).score
    # Exported before the inference settings left the evaluation ones (issue #25): the scored features sat there.
    (older / CONFIG).write_text(json.dumps({**written, "evaluation": {"features": "backbone", "draws": 5}}))
    model = read_model_dir(older)
    assert model.config.features == "backbone" and model.config.evaluation == {"draws": 5}
    # Format 1 as written after the split (5671310 to 54f48e0): the entry of its own is the one read.
    (older / CONFIG).write_text(json.dumps({**written, "features": "both", "evaluation": {"draws": 5}}))
    assert read_model_dir(older).config.features == "both"
    # A format this sigverify does not know is refused by number, before its entries are read.
    (older / CONFIG).write_text(json.dumps({**written, "format_version": 3, "novel": 1}))
    with pytest.raises(ModelDirError, match=r"config.json: model format 3, this sigverify reads formats 1, 2"):
        read_model_dir(older)


def test_the_reference_count_of_the_threshold_can_be_chosen(served_model, tmp_path):
    tmp, run, ckpt, model_dir = served_model
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp_path / "two"), "--n-references", "2") == 0
    two = read_model_dir(tmp_path / "two")
    assert two.config.protocol.n_references_validated == 2
    # fewer references per validation signer: more genuine scores, from other reference sets
    assert len(two.calibration.genuine) > len(read_model_dir(model_dir).calibration.genuine)


def test_export_takes_a_run_folder_and_a_reference_count_its_validation_signers_support(served_model, tmp_path,
                                                                                        capsys, caplog):
    """A run evaluated with more references than its validation signers can enrol is exported for as many as they
    can (said, and stored); a count asked for explicitly that the data cannot support is refused, naming the flag."""
    tmp, run, ckpt, model_dir = served_model
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["evaluation"]["n_references"] = 12  # as `--model.evaluation.n_references 12` would
    many = tmp_path / "runs" / "many"
    (many / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, many / "checkpoints" / "best-epoch=001.ckpt")
    genuine_per_signer = 6  # SERVED_TINY's synthetic set
    with caplog.at_level("WARNING", logger="sigverify"):
        assert cli("export", "--ckpt", str(many), "--out", str(tmp_path / "m")) == 0  # the run folder
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_references"] == genuine_per_signer - 1
    assert read_model_dir(tmp_path / "m").config.protocol.n_references_validated == genuine_per_signer - 1
    assert "evaluated with 12 references" in caplog.text and "--n-references" in caplog.text
    assert cli("export", "--ckpt", str(many), "--out", str(tmp_path / "n"), "--n-references", "6") == 1
    error = capsys.readouterr().err
    assert "--n-references 6" in error and "at most 5" in error and not (tmp_path / "n").exists()


def test_an_export_that_fails_its_onnx_check_keeps_the_folder_it_would_replace(served_model, tmp_path, monkeypatch,
                                                                             capsys):
    """An export refused after its files were begun (the ONNX graph out of tolerance) leaves the folder it was to
    overwrite as it was, and no staging folder beside it."""
    tmp, run, ckpt, model_dir = served_model
    kept = tmp_path / "m"
    shutil.copytree(model_dir, kept)
    before = {f.name: f.read_bytes() for f in kept.iterdir()}
    monkeypatch.setattr("sigverify.serving.export.ONNX_TOLERANCE", -1.0)  # any difference, even 0, is too much
    assert cli("export", "--ckpt", ckpt, "--out", str(kept), "--overwrite") == 1
    assert "the ONNX graph differs from PyTorch" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in kept.iterdir()} == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m"]


def test_an_exported_folder_is_readable_by_other_users(served_model, tmp_path):
    """The service may run as another user (the Docker image's uid 1000): the folder follows the umask, not
    mkdtemp's owner-only mode."""
    previous = os.umask(0o022)
    try:
        assert cli("export", "--ckpt", served_model[2], "--out", str(tmp_path / "m")) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "m").iterdir()} == {0o644}


def test_export_takes_the_evaluation_settings_the_run_was_tested_with(served_model, tmp_path):
    """`sigverify test` may override the training run's evaluation settings; export follows the test's."""
    tmp, run, ckpt, model_dir = served_model
    other = tmp_path / "runs" / "r2"
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, other / "checkpoints" / "best.ckpt")
    assert cli("test", "--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name",
               "r2", *SERVED_TINY, "--data.cache_dir", str(tmp / "cache"), "--model.evaluation.normalize", "z",
               "--ckpt_path", str(other / "checkpoints" / "best.ckpt")) == 0
    report = json.loads((other / "test-references" / "report.json").read_text())
    assert cli("export", "--ckpt", str(other / "checkpoints" / "best.ckpt"), "--out", str(tmp_path / "m" / "z")) == 0
    model = read_model_dir(tmp_path / "m" / "z")  # a parent folder that did not exist is made
    assert model.config.protocol.normalize == "z" and model.config.evaluation["normalize"] == "z"
    assert model.threshold == report["threshold"]
    assert "test signers never seen" in (tmp_path / "m" / "z" / CARD).read_text()


def test_a_pairs_model_verifies_one_pair_with_the_pairs_threshold(served_model, tmp_path, capsys):
    tmp, run, ckpt, model_dir = served_model
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp_path / "pairs"), "--protocol", "pairs") == 0
    model = read_model_dir(tmp_path / "pairs")
    assert model.threshold == json.loads((run / "test-pairs" / "report.json").read_text())["threshold"]
    genuine, forged, rows = signer_files(served_model)
    predicted = np.load(run / "predict" / "embeddings.npz")["embedding"].astype(np.float64)
    verdict = Verifier(tmp_path / "pairs").verify_files(genuine[:1], forged[0])
    assert verdict.score == pytest.approx(float(predicted[rows[0]] @ predicted[rows[len(genuine)]]), abs=1e-5)
    assert cli("verify", "--model", str(tmp_path / "pairs"), "--reference", *genuine[:2], "--questioned", forged[0]) == 1
    assert "holds for one reference" in capsys.readouterr().err


@pytest.mark.slow
def test_the_serving_install_alone_verifies(served_model, serving_install, tmp_path):
    """`pip install "sigverify[serve]"` into a new environment (no torch, no Lightning), then `sigverify
    verify`: the same score as the full install's."""
    tmp, run, ckpt, model_dir = served_model
    genuine, _, _ = signer_files(served_model)
    listed = subprocess.run([str(serving_install / "bin" / "pip"), "list"], capture_output=True, text=True).stdout.lower()
    assert "onnxruntime" in listed and not any(f"\n{name} " in listed for name in ("torch", "lightning", "timm"))
    args = ["verify", "--model", str(model_dir), "--reference", *genuine[:3], "--questioned", genuine[3]]
    served = subprocess.run([str(serving_install / "bin" / "sigverify"), *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    full = Verifier(model_dir).verify_files(genuine[:3], genuine[3])
    assert json.loads(served.stdout)["score"] == pytest.approx(full.score, abs=1e-9)


def test_verify_gives_the_likelihood_ratio_of_the_calibration_fitted_on_validation_signers(served_model, capsys):
    """The exported folder carries an LR calibration fitted on the validation scores it keeps; `verify` reports
    the LR of its score, with the verbal equivalent, and flags a reference count it was not validated for."""
    from sigverify.evaluation.likelihood_ratio import LRCalibration, verbal

    tmp, run, ckpt, model_dir = served_model
    stored = json.loads((model_dir / CALIBRATION).read_text())
    exported = LRCalibration.from_json(stored["likelihood_ratio"])
    refit = LRCalibration.fit(stored["genuine"], stored["skilled"], repeats=exported.repeats)
    assert (exported.slope, exported.intercept) == pytest.approx((refit.slope, refit.intercept), rel=1e-9)
    genuine, forged, _ = signer_files(served_model)
    assert cli("verify", "--model", str(model_dir), "--reference", *genuine[:3], "--questioned", forged[0]) == 0
    answer = json.loads(capsys.readouterr().out)
    lr = answer["likelihood_ratio"]
    assert lr["log10_lr"] == pytest.approx(float(refit.log10_lr(answer["score"]))) and lr["calibrated"]
    assert lr["lr"] == pytest.approx(10 ** lr["log10_lr"]) and lr["verbal"] == verbal(lr["lr"]) and "ENFSI" in lr["scale"]
    assert cli("verify", "--model", str(model_dir), "--reference", *genuine[:2], "--questioned", forged[0]) == 0
    fewer = json.loads(capsys.readouterr().out)["likelihood_ratio"]
    assert not fewer["calibrated"] and fewer["note"].startswith("uncalibrated: the LR calibration holds for 3")


def test_a_run_tested_with_both_features_exports_them(served_model, tmp_path):
    """`sigverify test --model.inference.features both` (the embedding averaged with its backbone's view), then
    export: the folder's ONNX graph, its PyTorch twin and its threshold are those of the scoring network."""
    from sigverify.serving.pretrained import SignatureModel

    tmp, run, ckpt, model_dir = served_model
    other = tmp_path / "runs" / "both"
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, other / "checkpoints" / "best.ckpt")
    assert cli("test", "--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name",
               "both", *SERVED_TINY, "--data.cache_dir", str(tmp / "cache"), "--model.inference.features", "both",
               "--ckpt_path", str(other / "checkpoints" / "best.ckpt")) == 0
    report = json.loads((other / "test-references" / "report.json").read_text())
    assert cli("export", "--ckpt", str(other), "--out", str(tmp_path / "m")) == 0
    model = read_model_dir(tmp_path / "m")
    assert model.threshold == report["threshold"] and model.config.features == "both"
    genuine, forged, _ = signer_files(served_model)
    images = Verifier(tmp_path / "m").preprocess_files(genuine + forged)
    expected = embed_images(TrainedCheckpoint.read(other).network(InferenceConfig(features="both")), images)
    assert model.config.embedding_dim == expected.shape[1] > 32
    assert np.abs(Verifier(tmp_path / "m").embed(images) - expected).max() <= 1e-4
    assert np.array_equal(SignatureModel.from_pretrained(str(tmp_path / "m")).embed(images), expected)


def test_export_refuses_a_carried_threshold_of_a_report_that_embedded_otherwise(served_model, tmp_path, capsys):
    """A run tested with another run's threshold (``threshold_from``) exports it only while the lending report
    still embedded as this network does; a lender rewritten with other inference settings is refused."""
    tmp, run, ckpt, model_dir = served_model
    for protocol in ("references", "pairs"):  # a lender's reports of both protocols (the run tests both)
        (tmp_path / "lender" / f"test-{protocol}").mkdir(parents=True)
        shutil.copy(run / f"test-{protocol}" / "report.json", tmp_path / "lender" / f"test-{protocol}")
    lender = tmp_path / "lender" / "test-references" / "report.json"
    carried = tmp_path / "runs" / "carried"
    (carried / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, carried / "checkpoints" / "best.ckpt")
    assert cli("test", "--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name",
               "carried", *SERVED_TINY, "--data.cache_dir", str(tmp / "cache"), "--model.evaluation.threshold_from",
               str(lender), "--ckpt_path", str(carried / "checkpoints" / "best.ckpt")) == 0
    assert cli("export", "--ckpt", str(carried), "--out", str(tmp_path / "ok")) == 0
    assert read_model_dir(tmp_path / "ok").threshold == json.loads(lender.read_text())["threshold"]

    rewritten = json.loads(lender.read_text())
    rewritten["inference"]["features"] = "both"
    lender.write_text(json.dumps(rewritten))
    assert cli("export", "--ckpt", str(carried), "--out", str(tmp_path / "refused")) == 1
    assert "other score settings (features: 'both' there, 'embedding' here)" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    # A lender refitted since (another network, same settings) cannot lend its threshold either.
    lender.write_text(json.dumps({**rewritten, "inference": {**rewritten["inference"], "features": "embedding"},
                                  "model_sha256": "0" * 16}))
    assert cli("export", "--ckpt", str(carried), "--out", str(tmp_path / "refused")) == 1
    assert "its threshold belongs to another network (weights 0000000000000000" in capsys.readouterr().err


def test_export_refuses_a_run_tested_as_an_ensemble(served_model, tmp_path, capsys):
    """Export writes one network: a run whose test scored it together with other checkpoints is refused, naming them."""
    tmp, run, ckpt, model_dir = served_model
    tested = tmp_path / "runs" / "ensemble"
    (tested / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, tested / "checkpoints" / "best.ckpt")
    assert cli("test", "--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name",
               "ensemble", *SERVED_TINY, "--data.cache_dir", str(tmp / "cache"), "--model.inference.ensemble",
               f"[{ckpt}]", "--ckpt_path", str(tested / "checkpoints" / "best.ckpt")) == 0
    assert cli("export", "--ckpt", str(tested), "--out", str(tmp_path / "m")) == 1
    assert f"scored as an ensemble with {ckpt} (model.inference.ensemble)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_model_scored_with_its_untrained_start_exports_both(tmp_path, monkeypatch):
    """A run that started from a weights file, tested with ``--model.inference.features backbone_and_untrained``
    (its trained backbone's features averaged with its starting point's), then exported: the folder's ONNX
    graph and its PyTorch twin embed as that pair does, and the folder's threshold is that test's."""
    import huggingface_hub
    import timm

    from sigverify.models.embedding import BackboneFeatures
    from sigverify.models.inference import WITH_UNTRAINED
    from sigverify.serving.pretrained import SignatureModel, push_model_dir

    weights = tmp_path / "start.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    common = ["--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", "r",
              *SERVED_TINY, "--data.cache_dir", str(tmp_path / "cache"), "--model.weights_file", str(weights)]
    assert cli("fit", *common, "--trainer.max_epochs", "2", "--data.sampler.batches_per_epoch", "3") == 0
    assert cli("test", *common, "--ckpt_path", "best", "--model.inference.features", WITH_UNTRAINED) == 0
    run = tmp_path / "runs" / "r"
    report = json.loads((run / "test-references" / "report.json").read_text())
    assert report["inference"]["features"] == WITH_UNTRAINED
    assert cli("export", "--ckpt", str(run), "--out", str(tmp_path / "m")) == 0
    model = read_model_dir(tmp_path / "m")
    assert model.config.features == WITH_UNTRAINED and model.threshold == report["threshold"]
    assert "its starting weights before any training" in (tmp_path / "m" / CARD).read_text()

    genuine, forged, _ = signer_files((tmp_path, run, str(next((run / "checkpoints").glob("best-*.ckpt"))), None))
    images = Verifier(tmp_path / "m").preprocess_files(genuine + forged)
    trained = embed_images(TrainedCheckpoint.read(run).network(InferenceConfig(features="backbone")), images)
    start = embed_images(BackboneFeatures(SignatureEmbedder("test_efficientnet", weights_file=str(weights)).eval()), images)
    assert not np.allclose(trained @ trained.T, start @ start.T, atol=1e-3)  # training moved it: the check can fail
    served = Verifier(tmp_path / "m").embed(images)
    np.testing.assert_allclose(served @ served.T, (trained @ trained.T + start @ start.T) / 2, atol=1e-4)
    # The folder carries its starting point: the file the run started from is not needed to read it, nor to copy it.
    weights.unlink()
    model = SignatureModel.from_pretrained(str(tmp_path / "m"))
    np.testing.assert_allclose(model.embed(images), served, atol=1e-4)
    model.save_pretrained(tmp_path / "copy")
    uploaded = []

    class RecordingApi:  # the hub as `push` sees it: what it uploads
        def __init__(self, token=None):
            pass

        def create_repo(self, *args, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            uploaded.extend(kwargs["allow_patterns"])

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    push_model_dir(tmp_path / "m", "someone/model")
    assert "start.safetensors" in uploaded and "model.safetensors" in uploaded
    np.testing.assert_allclose(SignatureModel.from_pretrained(str(tmp_path / "copy")).embed(images), served, atol=1e-4)
    (tmp_path / "copy" / "start.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelDirError, match=r"copy/start\.safetensors: does not fit"):
        SignatureModel.from_pretrained(str(tmp_path / "copy"))


def test_the_centre_of_mass_canvas_set_for_fit_is_what_the_exported_folder_serves(tmp_path):
    """sigver's canvas chosen on `sigverify fit`'s command line: the run trains on it, the exported folder
    records it, and `verify`'s front door prepares a file exactly as training did (not by the default fit)."""
    from sigverify.data.preprocess import PreprocessConfig, preprocess_file

    canvas = ["--data.preprocess.placement", "centre_of_mass", "--data.preprocess.canvas_height", "160",
              "--data.preprocess.canvas_width", "320"]
    common = ["--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", "c",
              *SERVED_TINY, *canvas, "--data.cache_dir", str(tmp_path / "cache")]
    assert cli("fit", *common, "--trainer.max_epochs", "1", "--data.sampler.batches_per_epoch", "1") == 0
    ckpt = str(next((tmp_path / "runs" / "c" / "checkpoints").glob("best-*.ckpt")))
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp_path / "model")) == 0
    served = read_model_dir(tmp_path / "model").config.preprocess
    assert (served.placement, served.canvas_height, served.canvas_width) == ("centre_of_mass", 160, 320)
    assert "centre of mass at the centre of a 160x320 px canvas" in " ".join((tmp_path / "model" / CARD).read_text().split())

    dm = TrainedCheckpoint.read(ckpt).datamodule()
    dm.setup("test")
    position = dm.positions("test")[0]
    file = dm.manifest_path().parent / dm.records[position].path
    seen_in_training = np.asarray(dm.images[position])
    verifier = Verifier(tmp_path / "model")
    np.testing.assert_array_equal(verifier.read(file.read_bytes(), str(file)).model_view, seen_in_training)
    assert not np.array_equal(preprocess_file(file, PreprocessConfig(height=32, width=64)), seen_in_training)
