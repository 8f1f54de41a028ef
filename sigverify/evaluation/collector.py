"""Collecting the embeddings of an evaluation pass, from every rank (a torchmetrics ``Metric``).

Verification metrics are not averages of per-batch numbers: the protocols pair every signature
with others of its signer, so an epoch's embeddings must be gathered whole. ``cat`` states do
that, and torchmetrics gathers them across ranks (uneven lengths included) when ``compute`` runs.
They stay on the device until then: a ``.cpu()`` per batch would be a host sync per batch.
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class EmbeddingCollector(Metric):
    """``update(embeddings, signers, genuine[, image_stats])``; ``compute()`` -> numpy arrays
    (embeddings, signers, genuine, image_stats) of everything seen, from all ranks."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("embeddings", "signers", "genuine", "image_stats"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, signers: torch.Tensor, genuine: torch.Tensor,
               image_stats: torch.Tensor | None = None) -> None:
        self.embeddings.append(embeddings.detach().float())
        self.signers.append(signers.long())
        self.genuine.append(genuine.long())  # bool does not travel through every backend's all_gather
        if image_stats is not None:
            self.image_stats.append(image_stats.detach().float())

    def compute(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        # After a distributed sync the states are single gathered tensors, before it lists of batches.
        embeddings, signers, genuine, stats = (_numpy(x) for x in (self.embeddings, self.signers, self.genuine,
                                                                   self.image_stats))
        if embeddings is None or embeddings.size == 0:
            return np.zeros((0, 0)), np.zeros(0, int), np.zeros(0, bool), None
        return embeddings, signers, genuine.astype(bool), stats if stats is not None and stats.size else None


def _numpy(state) -> np.ndarray | None:
    if isinstance(state, list) and not state:
        return None
    return dim_zero_cat(state).cpu().numpy()
