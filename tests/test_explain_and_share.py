"""Explanation maps (`sigverify explain`, `sigverify test --explain N`), model sharing (from_pretrained,
save_pretrained, push, the model card) and the interactive app, on a model trained briefly on synthetic signers."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from sigverify.data.preprocess import preprocess_file
from sigverify.evaluation.likelihood_ratio import SCALE
from sigverify.explain.attribution import Explainer, ink_mask, ink_ratio
from sigverify.explain.errors import confident_errors, within_signer_pairs
from sigverify.models.inference import InferenceConfig
from sigverify.serving.model_dir import CARD, WEIGHTS, ModelDirError, read_model_dir
from sigverify.serving.pretrained import SignatureModel
from sigverify.serving.verifier import Verifier

from conftest import SERVED_TINY, cli, signer_files

PAGE = Path(__file__).resolve().parents[1] / "sigverify" / "app" / "page.py"


# -- the ink-attribution ratio on constructed cases --------------------------------------------------
def test_ink_ratio_of_constructed_maps():
    image = np.zeros((20, 40), np.uint8)
    image[8:12, 5:35] = 255  # one horizontal stroke
    ink = ink_mask(image)
    assert ink.sum() == 4 * 30
    assert ink_ratio(ink.astype(float), ink) == 1.0  # a map that is all ink
    assert ink_ratio((~ink).astype(float), ink) == 0.0  # all background
    half = np.where(ink, 1.0, 0.0) + np.where(~ink, 120 / (800 - 120), 0.0)
    assert ink_ratio(half, ink) == pytest.approx(0.5)
    assert ink_ratio(np.where(ink, 1.0, -5.0), ink) == 1.0  # only positive attribution counts
    assert np.isnan(ink_ratio(np.zeros((20, 40)), ink))
    assert ink_mask(image, reach=2).sum() > ink.sum() and ink_mask(image, reach=2)[6, 20] and not ink_mask(image, 2)[5, 20]
    assert not ink_mask(np.zeros((5, 5), np.uint8)).any()
    with pytest.raises(ValueError, match="differ in size"):
        ink_ratio(np.ones((10, 10)), ink)


def test_the_warning_fires_for_background_attribution_and_no_lift():
    from sigverify.explain.errors import attribution_warning

    assert attribution_warning(0.8, 0.3) is None  # mostly on ink, well above an even spread
    assert "mostly on background" in attribution_warning(0.3, 0.1)
    no_lift = attribution_warning(0.55, 0.5)
    assert "hardly more on ink" in no_lift and "mostly on background" not in no_lift
    assert attribution_warning(None, None) is None


def test_maps_belong_to_their_image_and_work_with_frozen_stages():
    """Each image's map is of its similarity to the other: swapping the pair swaps the maps. Frozen stages
    (no gradient on their weights) still give maps, and no .grad is left on the model."""
    from sigverify.models.embedding import SignatureEmbedder

    torch.manual_seed(0)
    network = SignatureEmbedder("test_efficientnet", freeze=2, dim=16, hidden=(32,)).eval()
    rng = np.random.default_rng(0)
    images = np.zeros((2, 32, 64), np.uint8)
    images[0, 10:14, 5:50], images[1, 5:25, 30:34] = 255, 255
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    flags = [p.requires_grad for p in network.parameters()]
    explainer = Explainer(network, 32)
    ab, ba = explainer.pairs(images[:1], images[1:])[0], explainer.pairs(images[1:], images[:1])[0]
    np.testing.assert_allclose(ab.reference, ba.questioned, atol=1e-6)
    np.testing.assert_allclose(ab.questioned, ba.reference, atol=1e-6)
    assert not np.allclose(ab.reference, ab.questioned)
    assert all(p.grad is None for p in network.parameters())
    assert [p.requires_grad for p in network.parameters()] == flags and False in flags  # frozen stay frozen, others not
    with pytest.raises(RuntimeError):  # an error half-way still gives the weights their flags back
        explainer.maps(images, torch.zeros(2, 7))  # targets of the wrong size
    assert [p.requires_grad for p in network.parameters()] == flags


def test_a_map_without_positive_attribution_is_null_in_json():
    from sigverify.explain.attribution import PairMaps

    blank = np.zeros((4, 8), np.float32)
    summary = PairMaps(0.5, blank, blank, float("nan"), 0.25, 0.1, 0.1, float("nan"), 0.1).summary()
    assert summary["reference_ink_ratio"] is None and summary["questioned_ink_ratio"] == 0.25
    assert "NaN" not in json.dumps(summary)


def test_most_confident_errors_are_errors_ranked_by_margin():
    similarity = np.array([0.9, 0.2, 0.5, 0.1, 0.95, 0.6])
    genuine = np.array([True, True, True, False, False, False])
    # Threshold 0.55: genuine 0.2 and 0.5 are rejected (margins 0.35, 0.05); forgeries 0.95, 0.6 accepted (0.4, 0.05).
    assert confident_errors(similarity, genuine, 0.55, 3).tolist() == [4, 1, 2]
    pairs, kinds = within_signer_pairs(np.array([0, 0, 0, 1, 1]), np.array([True, True, False, True, False]))
    assert sorted(map(tuple, pairs[kinds].tolist())) == [(0, 1)] and sorted(map(tuple, pairs[~kinds].tolist())) == [(0, 2), (1, 2), (3, 4)]


# -- maps of a trained model ---------------------------------------------------------------------------
def test_maps_have_the_input_size_and_are_finite(served_model):
    model = SignatureModel.from_pretrained(str(served_model[3]))
    genuine, forged, _ = signer_files(served_model)
    images = np.stack([preprocess_file(p, model.preprocess_config) for p in genuine[:2] + forged[:1]])
    explainer = Explainer(model.embedder, model.preprocess_config.height)
    pairs = explainer.pairs(images[:2], images[1:])
    height, width = model.preprocess_config.height, model.preprocess_config.width
    for pair in pairs:
        for attribution in (pair.reference, pair.questioned):
            assert attribution.shape == (height, width) and np.isfinite(attribution).all()
            assert attribution.min() >= 0 and attribution.max() <= 1 and attribution.max() > 0
        assert 0 <= pair.questioned_ink_ratio <= 1 and 0 < pair.questioned_ink_share < 1
    embeddings = model.embed(images)
    assert pairs[0].similarity == pytest.approx(float(embeddings[0] @ embeddings[1]), abs=1e-5)
    with pytest.raises(ValueError, match="no layer 'backbone.nope'.*its stages: backbone.blocks"):
        Explainer(model.embedder, height, layer="backbone.nope")


def test_explain_command_on_a_checkpoint_and_a_model_folder(served_model, tmp_path, capsys):
    tmp, run, ckpt, model_dir = served_model
    genuine, forged, _ = signer_files(served_model)
    results = {}
    for name, model in (("ckpt", ckpt), ("dir", model_dir)):
        out = tmp_path / f"{name}.png"
        assert cli("explain", "--model", str(model), genuine[0], forged[0], "--out", str(out)) == 0
        results[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    assert results["ckpt"]["similarity"] == pytest.approx(results["dir"]["similarity"], abs=1e-6)  # the same network
    assert 0 <= results["dir"]["questioned_ink_ratio"] <= 1 and results["dir"]["map_size"] == [32, 64]
    assert "references protocol" in results["dir"]["note"] and "decision" not in results["dir"]
    # A pairs model's threshold holds for one reference against one questioned: explain decides with it.
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp_path / "pairs"), "--protocol", "pairs") == 0
    capsys.readouterr()
    assert cli("explain", "--model", str(tmp_path / "pairs"), genuine[0], forged[0], "--out", str(tmp_path / "p.png")) == 0
    pairs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    folder = read_model_dir(tmp_path / "pairs")
    assert pairs["decision"] == ("genuine" if pairs["score"] >= folder.threshold else "forgery")
    # its decision carries the likelihood ratio of the folder's calibration at its score, as `sigverify verify` does
    lr = folder.calibration.likelihood_ratio
    assert pairs["likelihood_ratio"]["log10_lr"] == pytest.approx(float(lr.log10_lr(pairs["score"])), abs=1e-9)
    assert pairs["likelihood_ratio"]["scale"] == SCALE and "beyond_validation_scores" in pairs["likelihood_ratio"]
    verified = Verifier(tmp_path / "pairs").verify_files([genuine[0]], forged[0])
    assert verified.score == pytest.approx(pairs["score"], abs=1e-5)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert cli("explain", "--model", str(model_dir), genuine[0], str(bad), "--out", str(tmp_path / "x.png")) == 1
    assert f"{bad}: " in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_sigverify_test_explain_writes_error_maps_and_the_ink_distribution(served_model, tmp_path):
    tmp = served_model[0]
    common = ["--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", "x",
              *SERVED_TINY, "--data.cache_dir", str(tmp / "cache"), "--report.explain.sample", "24"]
    assert cli("test", *common, "--ckpt_path", served_model[2], "--explain", "3") == 0
    folder = tmp_path / "runs" / "x" / "test-references"
    report = json.loads((folder / "report.json").read_text())
    explanations = report["explanations"]
    assert 0 < len(explanations["maps"]) <= 3 and explanations["n_errors"] >= len(explanations["maps"])
    threshold, margins = explanations["pairs_threshold"], []
    for entry in explanations["maps"]:
        assert (folder / "explain" / entry["file"]).is_file()
        wrong = entry["similarity"] >= threshold if entry["kind"] == "false-accept" else entry["similarity"] < threshold
        assert wrong, entry
        margins.append(abs(entry["similarity"] - threshold))
    assert margins == sorted(margins, reverse=True)  # the most confident first
    ink = explanations["ink_ratio"]
    assert ink["n"] + ink["n_no_positive"] == 48 and 0 <= ink["p10"] <= ink["median"] <= ink["p90"] <= 1
    from sigverify.explain.errors import attribution_warning

    assert explanations["warning"] == attribution_warning(ink["median"], explanations["ink_share_median"])
    assert explanations["ink_lift"] == pytest.approx(ink["median"] / explanations["ink_share_median"])
    assert explanations["stroke_ratio"]["n"] + explanations["stroke_ratio"]["n_no_positive"] == 48
    assert (folder / "explain" / "ink_ratio.png").is_file() and "## Explanation maps" in (folder / "report.md").read_text()
    assert "explanations" not in json.loads((tmp_path / "runs" / "x" / "test-pairs" / "report.json").read_text())


# -- sharing --------------------------------------------------------------------------------------------
def test_a_model_loaded_from_its_folder_embeds_bit_identically_to_its_checkpoint(served_model, tmp_path):
    from sigverify.models.checkpoint import TrainedCheckpoint
    from sigverify.serving.export import onnx_embed
    from sigverify.serving.verifier import Verifier

    tmp, run, ckpt, model_dir = served_model
    model = SignatureModel.from_pretrained(str(model_dir))
    network = TrainedCheckpoint.read(ckpt).network(InferenceConfig(tta_shift=model.folder.config.tta_shift))
    genuine, forged, _ = signer_files(served_model)
    images = Verifier(model_dir).preprocess_files(genuine + forged)
    with torch.no_grad():
        expected = network(torch.from_numpy(images[:, None])).numpy()
    assert np.array_equal(model.embed(images), expected)
    assert np.abs(onnx_embed(model_dir / "model.onnx", images) - expected).max() < 1e-4

    before = {name: (model_dir / name).read_bytes() for name in os.listdir(model_dir)}
    model.save_pretrained(model_dir)  # into its own folder: nothing to write, nothing lost
    assert {name: (model_dir / name).read_bytes() for name in os.listdir(model_dir)} == before
    model.save_pretrained(tmp_path / "copy")  # round trip: the same files, the same embeddings
    for name in os.listdir(model_dir):
        assert (tmp_path / "copy" / name).read_bytes() == (model_dir / name).read_bytes(), name
    assert np.array_equal(SignatureModel.from_pretrained(str(tmp_path / "copy")).embed(images), expected)

    with torch.no_grad():
        next(model.embedder.parameters()).add_(1e-3)  # fine-tuned: the threshold no longer belongs to it
    with pytest.raises(ValueError, match="the threshold and calibration would be stale"):
        model.save_pretrained(tmp_path / "changed")


def test_from_pretrained_reads_a_hub_repository_from_the_local_cache_offline(served_model, tmp_path, monkeypatch):
    """A repo id resolves through huggingface_hub: here its cache, laid out as a download leaves it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hub" / "models--someone--sigverify-demo" / "snapshots" / ("a" * 40)
    shutil.copytree(served_model[3], snapshot)
    (tmp_path / "hub" / "models--someone--sigverify-demo" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--sigverify-demo" / "refs" / "main").write_text("a" * 40)
    model = SignatureModel.from_pretrained("someone/sigverify-demo", cache_dir=tmp_path / "hub")
    local = SignatureModel.from_pretrained(str(served_model[3]))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 64), dtype=np.uint8)
    assert np.array_equal(model.embed(images), local.embed(images)) and model.threshold == local.threshold
    with pytest.raises(Exception, match="(?i)offline|cannot find|not found|does not exist"):
        SignatureModel.from_pretrained("someone/absent", cache_dir=tmp_path / "hub")


def test_a_broken_folder_names_the_file(served_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(served_model[3], broken)
    (broken / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ModelDirError, match=f"{WEIGHTS}: does not fit the network"):
        SignatureModel.from_pretrained(str(broken))


def test_push_checks_the_folder_and_uploads_it_or_says_why_not(served_model, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli("push", str(served_model[3]), "--repo", "someone/model") == 1
    assert "hub is not reachable here" in capsys.readouterr().err
    assert cli("push", str(tmp_path), "--repo", "someone/model") == 1
    assert "config.json: missing" in capsys.readouterr().err

    calls = []

    class RecordingApi:  # the hub's API as seen by `push`: what it was asked to do
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs["private"]))

        def create_branch(self, repo_id, branch, **kwargs):
            calls.append(("branch", repo_id, branch))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs["folder_path"], kwargs["repo_id"], sorted(kwargs["allow_patterns"])))
            return type("Commit", (), {"commit_url": "https://hub.example/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    assert cli("push", str(served_model[3]), "--repo", "someone/model", "--private", "--token", "t") == 0
    assert json.loads(capsys.readouterr().out)["url"] == "https://hub.example/commit/1"
    assert calls == [("token", "t"), ("create", "someone/model", True),
                     ("upload", str(served_model[3]), "someone/model",
                      sorted(["README.md", "calibration.json", "config.json", "model.onnx", "model.safetensors"]))]
    calls.clear()
    assert cli("push", str(served_model[3]), "--repo", "someone/model", "--revision", "v2") == 0
    assert ("branch", "someone/model", "v2") in calls


def test_model_card_states_data_protocol_threshold_figures_floor_and_limits(served_model):
    from sigverify.serving.model_card import model_card

    card = ModelCard.load(served_model[3] / CARD)  # the hub's own reader: metadata and text
    folder = read_model_dir(served_model[3])
    config, text = folder.config, card.text
    report = json.loads((served_model[1] / "test-references" / "report.json").read_text())
    with_intervals = str(model_card(config, {**report, "eer": 0.12, "image_statistics_eer": 0.30, "eer_ci95": [0.08, 0.17],
                                             "hter_ci95": [0.1, 0.2], "auc_ci95": [0.9, 0.95]}))
    assert "| 12.0 % | 8.0 % - 17.0 % |" in with_intervals and "10.0 % - 20.0 %" in with_intervals
    assert "0.900 - 0.950" in with_intervals and "Do not deploy" not in with_intervals
    assert "Do not deploy it" in str(model_card(config, {**report, "eer": 0.28, "image_statistics_eer": 0.30}))
    assert "built-in synthetic set" in text and f"{len(config.split['train'])} training" in text
    assert "Protocol: **references**" in text and f"{config.threshold.value:.4f}" in text
    assert "validation signers" in text and "95 % interval" in text
    assert f"{100 * report['eer']:.1f} %" in text and f"{100 * report['image_statistics_eer']:.1f} %" in text
    assert "Writer-independent" in text and "Offline only" in text and "synthetic (generated Latin-like strokes)" in text
    # the hub's metadata: licence, library and the test figures as a model-index
    assert card.data.license == "apache-2.0" and card.data.library_name == "sigverify"
    metrics = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert metrics["eer"] == pytest.approx(report["eer"], abs=1e-4) and metrics["hter"] == pytest.approx(report["hter"], abs=1e-4)
    # the likelihood ratios: the calibration and its range, and the test signers' Cllr when the report has one
    lr = folder.calibration.likelihood_ratio
    assert f"{lr.method} calibration" in text and f"to {10 ** lr.bounds[1]:,.0f}" in text
    tested = report["likelihood_ratio"]
    assert f"{tested['cllr']:.3f} / {tested['cllr_min']:.3f}" in text and metrics["cllr"] == pytest.approx(tested["cllr"], abs=1e-4)
    assert "the threshold, its rates and the\n  likelihood ratios hold" in text
    # a folder without a test report or an LR calibration (exported before either was) still reads as sentences
    bare = model_card(config).text
    assert "No test report was found" in bare and "Likelihood ratio" not in bare and "model-index" not in str(model_card(config))
    assert "the threshold and its rates hold for that number" in bare and "{{" not in bare


# -- the app ------------------------------------------------------------------------------------------
def _uploads(paths):
    return [(Path(p).name, Path(p).read_bytes(), "image/png") for p in paths]


def test_app_verifies_uploads_and_shows_the_maps(served_model, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from sigverify.serving.verifier import Verifier

    monkeypatch.setenv("SIGVERIFY_MODEL", str(served_model[3]))
    genuine, forged, _ = signer_files(served_model)
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception and "references protocol" in at.caption[0].value
    at.file_uploader(key="references").set_value(_uploads(genuine[:3]))
    at.file_uploader(key="questioned").set_value(_uploads(forged[:1])[0])
    at.run()
    at.button[0].click().run()
    assert not at.exception
    expected = Verifier(served_model[3]).verify_files(genuine[:3], forged[0])
    shown = (at.success if expected.genuine else at.error)[0].value
    assert ("Genuine" if expected.genuine else "Forgery") in shown and f"score {expected.score:.4f}" in shown
    lr = expected.likelihood_ratio_json()
    assert any(f"Likelihood ratio **{lr['lr']:.3g}**" in m.value and lr["verbal"] in m.value for m in at.markdown)
    images = [e for e in at.main.children.values() if type(e).__name__ == "Image"]  # the distribution chart
    assert images and "Explanation maps" in [s.value for s in at.subheader]
    columns = [c for c in at.columns]
    assert len(columns) == 6  # a reference and the questioned signature, for each of the 3 references

    at.file_uploader(key="questioned").set_value(("scan.png", b"not an image", "image/png"))
    at.run()
    at.button[0].click().run()
    assert any("scan.png" in e.value for e in at.error)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_renders_in_a_real_browser(served_model, tmp_path):
    from test_service_page import CHROMIUM, CHROMIUM_FLAGS, _browser_or_skip

    from sigverify.serving.verifier import Verifier

    playwright_api = _browser_or_skip()
    genuine, forged, _ = signer_files(served_model)
    expected = Verifier(served_model[3]).verify_files(genuine[:3], forged[0])
    port = _free_port()
    app = subprocess.Popen([sys.executable, "-m", "sigverify.cli", "app", "--model", str(served_model[3]),
                            "--port", str(port), "--headless"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("Signature verification").wait_for(timeout=60000)
            page.get_by_text("Reference signatures").wait_for(timeout=30000)
            uploads = page.locator("input[type='file']")
            uploads.nth(0).set_input_files(genuine[:3])
            uploads.nth(1).set_input_files(forged[0])
            page.get_by_role("button", name="Verify").click()
            page.get_by_text(f"score {expected.score:.4f}").wait_for(timeout=120000)
            page.get_by_text("Explanation maps").wait_for(timeout=60000)
            page.get_by_text("questioned vs", exact=False).first.wait_for(timeout=120000)  # the maps themselves
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            browser.close()
        assert (tmp_path / "app.png").stat().st_size > 5000
    finally:
        app.terminate()
        app.wait(timeout=30)
