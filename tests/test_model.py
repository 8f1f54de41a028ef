
import pytest
import timm
import torch
from safetensors.torch import save_file

from sigverify.labels import SignatureLabels
from sigverify.models.embedding import SignatureEmbedder, create_backbone, freeze_stages
from sigverify.models.module import SignatureVerifier


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_from_a_local_file_adapt_the_rgb_stem(tmp_path, suffix):
    """Offline loading: an RGB checkpoint on disk, its stem summed into one input channel by timm."""
    rgb = timm.create_model("test_efficientnet", num_classes=0)
    state = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = SignatureEmbedder("test_efficientnet", weights_file=str(path), hidden=[16], dim=8)
    loaded = model.backbone.state_dict()
    torch.testing.assert_close(loaded["conv_stem.weight"], state["conv_stem.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(loaded["blocks.0.0.conv.weight"], state["blocks.0.0.conv.weight"])
    out = model.eval()(torch.randint(0, 256, (2, 1, 32, 64), dtype=torch.uint8))
    assert out.shape == (2, 8) and torch.allclose(out.norm(dim=1), torch.ones(2))


def test_channels_last_gives_the_same_embeddings_and_gradients_on_a_cpu():
    """The grey presets' network (Lite0, first 5 stages frozen, their batch-norm statistics kept) computes the
    same function in NHWC as in NCHW, up to float rounding: the embeddings and the loss agree, and NHWC's
    gradients are no further from a float64 computation than NCHW's own (about 3e-3: batch norms in training
    mode amplify rounding)."""
    import copy

    from layout_recorder import first_convolution, layout

    torch.manual_seed(0)
    settings = dict(backbone="tf_efficientnet_lite0", freeze_stages=5, frozen_bn_stats="keep", loss="triplet_hard")
    nchw = SignatureVerifier(**settings, channels_last=False)
    nhwc = SignatureVerifier(**settings)  # channels_last by default
    nhwc.load_state_dict(nchw.state_dict())
    exact = copy.deepcopy(nchw).double()
    images = torch.randint(0, 256, (16, 1, 64, 128), dtype=torch.uint8)
    labels = SignatureLabels(torch.arange(4).repeat_interleave(4), torch.tensor([True, True, True, False] * 4))

    def embed_and_backpropagate(model, inputs, expected_layout):
        seen = []
        first_convolution(model.embedder).register_forward_hook(lambda m, i, out: seen.append(layout(out)))
        torch.manual_seed(1)  # the same dropout draws
        embeddings = model.train()(inputs)
        loss = model.loss_fn(embeddings, labels).loss
        loss.backward()
        assert seen == [expected_layout]
        grads = {k: p.grad.double() for k, p in model.named_parameters() if p.requires_grad}
        return embeddings.detach().double(), loss.detach().double(), grads

    reference, exact_loss, exact_grads = embed_and_backpropagate(exact, images.double() / 255, "NCHW")
    default, default_loss, default_grads = embed_and_backpropagate(nchw, images, "NCHW")
    laid_out, laid_out_loss, laid_out_grads = embed_and_backpropagate(nhwc, images, "NHWC")
    torch.testing.assert_close(laid_out, default, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(default, reference, atol=1e-5, rtol=1e-4)
    assert exact_loss > 0
    torch.testing.assert_close(laid_out_loss, exact_loss, atol=1e-5, rtol=1e-4)
    largest = max(g.norm() for g in exact_grads.values())
    checked = set()
    for key, grad in exact_grads.items():
        if grad.norm() < 1e-3 * largest:  # e.g. the bias of a batch norm that another batch norm follows: 0 exactly
            continue
        default_error = (default_grads[key] - grad).norm() / grad.norm()
        laid_out_error = (laid_out_grads[key] - grad).norm() / grad.norm()
        # a layout bug errs by the gradient's own size; rounding by NCHW's own error or, kernels differing from
        # CPU to CPU, up to 1e-2
        assert laid_out_error <= max(2 * default_error, 1e-2), (key, laid_out_error.item(), default_error.item())
        checked.add(key)
    assert {key for key, grad in exact_grads.items() if grad.dim() == 4} <= checked  # every trained convolution


def test_missing_weights_file_and_unknown_backbone():
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("test_efficientnet", weights_file="nope.pth")
    with pytest.raises(ValueError, match="close timm names"):
        create_backbone("efficientnetv2_mm")


def test_freeze_first_stages():
    backbone = create_backbone("test_efficientnet")
    freeze_stages(backbone, 1)
    assert not any(p.requires_grad for p in backbone.conv_stem.parameters())
    assert not any(p.requires_grad for p in backbone.blocks[0].parameters())
    assert all(p.requires_grad for p in backbone.blocks[1].parameters())
    with pytest.raises(ValueError, match="stages"):
        freeze_stages(backbone, 99)


@pytest.mark.parametrize("backbone", ["test_efficientnet", "mobilenetv3_small_050", "lcnet_050", "resnet10t"])
def test_embedder_fits_backbones_with_and_without_a_pre_logits_layer(backbone):
    embedder = SignatureEmbedder(backbone, dim=16, hidden=[8]).eval()
    out = embedder(torch.randint(0, 256, (2, 1, 32, 64), dtype=torch.uint8))
    assert out.shape == (2, 16) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_gem_spans_average_to_max_pooling():
    from sigverify.models.embedding import GeM

    x = torch.rand(2, 3, 4, 5) + 0.1
    gem = GeM(p=1.0)
    assert torch.allclose(gem(x), x.mean(dim=(-2, -1)), atol=1e-6)
    gem.p.data.fill_(60.0)
    assert torch.allclose(gem(x), x.amax(dim=(-2, -1)), rtol=0.05)
    loop = torch.tensor([[float((x[b, c] ** 3).mean() ** (1 / 3)) for c in range(3)] for b in range(2)])
    assert torch.allclose(GeM(p=3.0)(x), loop, atol=1e-6)


def test_multiscale_neck_pools_the_last_stages_and_trains_them_all():
    plain = timm.create_model("test_efficientnet", features_only=True, in_chans=1)
    channels = plain.feature_info.channels()
    model = SignatureEmbedder("test_efficientnet", dim=16, hidden=[32], neck="multiscale", neck_stages=2)
    assert model.backbone.num_features == sum(channels[-2:])
    images = torch.randint(0, 256, (4, 1, 64, 128), dtype=torch.uint8)
    embeddings = model(images)
    assert embeddings.shape == (4, 16) and torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)
    embeddings[:, 0].sum().backward()
    assert all(pool.p.grad is not None and pool.p.grad.abs() > 0 for pool in model.backbone.pools)
    with pytest.raises(ValueError, match="neck must be one of"):
        SignatureEmbedder("test_efficientnet", neck="pyramid")
    with pytest.raises(ValueError, match="neck_stages=9"):
        SignatureEmbedder("test_efficientnet", neck="multiscale", neck_stages=9)


@pytest.mark.parametrize("bn_stats", ["adapt", "keep"])
def test_multiscale_neck_freezes_and_exports(tmp_path, bn_stats):
    from sigverify.serving.export import export_onnx, onnx_embed

    model = SignatureEmbedder("test_efficientnet", dim=16, hidden=[32], neck="multiscale", freeze=1,
                              frozen_bn_stats=bn_stats).eval()
    assert not any(p.requires_grad for p in model.backbone.trunk.conv_stem.parameters())
    export_onnx(model, 64, 128, tmp_path / "m.onnx")
    images = torch.randint(0, 256, (3, 64, 128), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(images[:, None]).numpy()
    assert abs(onnx_embed(tmp_path / "m.onnx", images.numpy()) - expected).max() <= 1e-4


@pytest.mark.parametrize("bn_stats", ["adapt", "keep"])
def test_a_fit_changes_no_frozen_weight_and_adapts_or_keeps_their_batch_norm_statistics(tmp_path, bn_stats):
    """Through a real Trainer, which never calls ``.train()`` on the module (so a mode set in ``train()`` is
    lost): the frozen stages' weights stay; their running statistics follow the training data with ``adapt``
    and stay as they started with ``keep``, whose frozen output is per image, not per batch."""
    import lightning as L

    from sigverify.data.datamodule import SamplerConfig, SignatureDataModule, SyntheticConfig
    from sigverify.data.preprocess import PreprocessConfig
    from sigverify.models.module import SignatureVerifier

    model = SignatureVerifier(backbone="test_efficientnet", freeze_stages=1, frozen_bn_stats=bn_stats, head_hidden=[16],
                              embedding_dim=8, loss="triplet_hard", evaluation={"n_references": 3})
    data = SignatureDataModule(synthetic=SyntheticConfig(signers=14, genuine=6, forgeries=4),
                               preprocess=PreprocessConfig(height=32, width=64), num_workers=0,
                               sampler=SamplerConfig(4, 2, 1, 1, batches_per_epoch=3), cache_dir=str(tmp_path / "cache"))
    backbone = model.embedder.backbone
    started = {k: v.clone() for k, v in backbone.state_dict().items()}
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              default_root_dir=tmp_path).fit(model, data)
    after = backbone.state_dict()
    frozen = [k for k in started if k.split(".")[0] in ("conv_stem", "bn1") or k.startswith("blocks.0.")]
    for key in (k for k in frozen if "running" not in k and "num_batches" not in k):
        torch.testing.assert_close(after[key], started[key])
    assert any(not torch.equal(after[k], started[k]) for k in started if k.startswith("blocks.1."))  # the rest trains
    statistics_moved = not torch.equal(after["bn1.running_mean"], started["bn1.running_mean"])
    assert statistics_moved == (bn_stats == "adapt")
    if bn_stats == "keep":
        trunk = torch.nn.Sequential(backbone.conv_stem, backbone.bn1, backbone.blocks[0]).train()
        x = torch.randn(4, 1, 32, 64)
        torch.testing.assert_close(trunk(x[:1]), trunk(x)[:1])  # per image, not per batch


def test_both_features_score_the_mean_of_the_embeddings_and_the_backbones_similarity():
    from sigverify.models.embedding import BackboneFeatures, scoring_network

    model = SignatureEmbedder("test_efficientnet", hidden=[16], dim=8).eval()
    images = torch.randint(0, 256, (3, 1, 32, 64), dtype=torch.uint8)
    with torch.no_grad():
        both, embedding, backbone = (scoring_network(model, f)(images) for f in ("both", "embedding", "backbone"))
        torch.testing.assert_close(backbone, BackboneFeatures(model)(images))
    torch.testing.assert_close(both.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(both @ both.T, (embedding @ embedding.T + backbone @ backbone.T) / 2)


def test_backbone_and_untrained_scores_the_mean_of_the_trained_and_the_starting_backbones(tmp_path):
    """``features: backbone_and_untrained``: one unit vector whose cosine similarity is the mean of the trained
    backbone's and the rebuilt starting point's; the start comes back from the recipe's pretrained weights only."""
    from sigverify.models.embedding import BackboneFeatures, embedder_from_hparams, scoring_network, untrained_embedder
    from sigverify.models.inference import WITH_UNTRAINED

    weights = tmp_path / "start.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    hp = dict(backbone="test_efficientnet", pretrained=False, weights_file=str(weights), freeze_stages=0,
              embedding_dim=8, head_hidden=[16], dropout=0.0, drop_path_rate=0.0)
    trained = embedder_from_hparams(hp).eval()
    with torch.no_grad():  # "training": the last block moved away from the start
        for p in trained.backbone.blocks[-1].parameters():
            p.add_(0.5 * torch.randn_like(p))
    images = torch.randint(0, 256, (4, 1, 32, 64), dtype=torch.uint8)
    with torch.no_grad():
        fused = scoring_network(trained, WITH_UNTRAINED, untrained_embedder(hp))(images)
        mine, start = BackboneFeatures(trained)(images), BackboneFeatures(SignatureEmbedder(
            "test_efficientnet", weights_file=str(weights)).eval())(images)
    assert not torch.allclose(mine @ mine.T, start @ start.T, atol=1e-3)  # two networks, so the check below can fail
    torch.testing.assert_close(fused.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(fused @ fused.T, (mine @ mine.T + start @ start.T) / 2)

    with pytest.raises(ValueError, match="needs the network the model started from"):
        scoring_network(trained, WITH_UNTRAINED)
    with pytest.raises(ValueError, match="started from random weights"):
        untrained_embedder({**hp, "weights_file": None})
    with pytest.raises(ValueError, match=r"another run \(runs/first\)"):
        untrained_embedder({**hp, "init_from": "runs/first"})
