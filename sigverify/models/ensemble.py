"""Several trained models evaluated as one.

Each member's embedding is unit-length; concatenated and scaled by 1/sqrt(n) they form a unit vector
whose cosine similarity with another such vector is the mean of the members' similarities. So every
protocol, the writer normalisation and whatever reads the embeddings (``predict``'s file) treat an
ensemble exactly as a single model. Averaging the similarities of independently trained small models
evens out their idiosyncratic errors, which is why ensembles help most where training data are scarce.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from torch import nn

from sigverify.data.splits import SPLIT_KEY
from sigverify.models.embedding import (SignatureEmbedder, embedder_from_hparams, embedder_weights, read_checkpoint,
                                        run_checkpoint)


class EmbeddingEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        parts = [member(images) for member in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))


def preprocess_differences(member, this_run) -> str:
    """'key: member's value vs this run's' for each preprocessing setting that differs ('' if none).
    A checkpoint stores the settings as a dataclass or, written through the CLI, as a mapping."""
    member, this_run = (asdict(c) if is_dataclass(c) else dict(c) for c in (member, this_run))
    return ", ".join(f"{key}: {member.get(key)} vs {value}" for key, value in this_run.items() if member.get(key) != value)


def load_member(path: str | Path, preprocess=None) -> tuple[SignatureEmbedder, dict | None]:
    """The embedding network of a sigverify checkpoint, frozen, for an ensemble, and the signers it
    saw (``None`` if the checkpoint predates that record). ``preprocess``: this run's image settings;
    a member trained on other images (size, binarisation) is refused. A run folder stands for its best
    checkpoint."""
    if Path(path).is_dir():
        path = run_checkpoint(path)
    checkpoint = read_checkpoint(path, "ensemble member checkpoint")
    stored = (checkpoint.get("datamodule_hyper_parameters") or {}).get("preprocess")
    if preprocess is not None and stored is not None:
        differences = preprocess_differences(stored, preprocess)
        if differences:
            raise ValueError(f"{path}: trained on images preprocessed otherwise than this run's ({differences}); "
                             "ensemble members must see the same images")
    member = embedder_from_hparams(checkpoint["hyper_parameters"], weights_from_checkpoint=True)
    member.load_state_dict(embedder_weights(checkpoint))
    return member.eval().requires_grad_(False), checkpoint.get(SPLIT_KEY)
