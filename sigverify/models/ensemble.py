"""Several trained models evaluated as one: loading the other members of an ensemble from their checkpoints.

The members are joined by ``embedding.EmbeddingEnsemble``, so every protocol treats an ensemble exactly as a
single model. Averaging the similarities of independently trained small models evens out their
idiosyncratic errors, which is why ensembles help most where training data are scarce.
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

from torch import nn

from sigverify.models.checkpoint import TrainedCheckpoint
from sigverify.models.inference import InferenceConfig


def preprocess_differences(member, this_run) -> str:
    """'key: member's value vs this run's' for each preprocessing setting that differs ('' if none).
    A checkpoint stores the settings as a dataclass or, written through the CLI, as a mapping."""
    member, this_run = (asdict(c) if is_dataclass(c) else dict(c) for c in (member, this_run))
    return ", ".join(f"{key}: {member.get(key)} vs {value}" for key, value in this_run.items() if member.get(key) != value)


def load_member(path: str | Path, preprocess=None, features: str = "embedding") -> tuple[nn.Module, dict | None]:
    """The network of a sigverify checkpoint, frozen, for an ensemble, and the signers it saw (``None`` if
    the checkpoint predates that record). ``features``: what this run scores with (``inference.features``),
    so every member is compared in the same way as the model it joins. ``preprocess``: this run's image
    settings; a member trained on other images (size, binarisation) is refused. A run folder stands for its
    best checkpoint."""
    checkpoint = TrainedCheckpoint.read(path, "ensemble member checkpoint")
    stored = checkpoint.data_settings.get("preprocess")
    if preprocess is not None and stored is not None:
        differences = preprocess_differences(stored, preprocess)
        if differences:
            raise ValueError(f"{checkpoint.path}: trained on images preprocessed otherwise than this run's "
                             f"({differences}); ensemble members must see the same images")
    return checkpoint.network(InferenceConfig(features=features)).requires_grad_(False), checkpoint.split
