"""How a trained network embeds outside training (validate, test, predict, export): which of its outputs is
scored, whether shifted copies of each image are averaged in, and which other trained models are scored
with it. How the embeddings are then compared and thresholded is evaluation's (``EvalConfig``).

No torch here: an exported model folder's config names its features, and the serving install reads it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# embedding: the projection head's output | backbone: the backbone's pooled features alone (the untrained
# baseline of a pretrained recipe) | both: the two averaged (their cosine similarities' mean) |
# backbone_and_untrained: the trained backbone's pooled features averaged with those of the network it started
# from, before training (a pretrained recipe's starting point, rebuilt from its weights)
Features = Literal["embedding", "backbone", "both", "backbone_and_untrained"]
WITH_UNTRAINED = "backbone_and_untrained"
FEATURES = get_args(Features)
# The choices that join two networks' outputs into one unit vector (EmbeddingEnsemble), and what each joins:
# "untrained" is the backbone's pooled features of the network the model started from.
JOINED_FEATURES = {"both": ("embedding", "backbone"), WITH_UNTRAINED: ("backbone", "untrained")}


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class InferenceConfig:
    features: Features = "embedding"
    tta_shift: float = 0.0  # > 0: embeddings averaged with 4 copies shifted by this fraction of the image (tta.py)
    # Other models' checkpoints or run folders, scored with this one, each with the same ``features``.
    ensemble: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if not 0.0 <= self.tta_shift < 0.5:
            raise ValueError(f"tta_shift is a fraction of the image size in [0, 0.5), got {self.tta_shift}")
