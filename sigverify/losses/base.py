"""What every loss shares: label semantics, the similarity matrix, and its diagnostics.

All losses work on L2-normalised embeddings with the masks of
:meth:`sigverify.labels.SignatureLabels.role_masks` (genuine anchors only; a forgery is never an
anchor nor a positive; the negatives are the anchor's own skilled forgeries and other signers').
Anchors without a positive or a negative are skipped.

Losses are written with masks, never boolean indexing or ``.item()``, so a training step makes no
host-device synchronisation: diagnostics stay on the device as the batch's similarity matrix with
role masks, and counts as tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sigverify.labels import SignatureLabels


@dataclass
class BatchSimilarities:
    """The batch's cosine similarities (detached) and which pairs are which, whatever the loss:
    the same distributions for every loss, so a sweep compares like with like."""

    similarity: torch.Tensor  # [B, B]
    genuine: torch.Tensor  # anchor - another genuine signature of its signer (attraction)
    skilled: torch.Tensor  # anchor - a skilled forgery of its own signer (repulsion that matters for forgeries)
    other: torch.Tensor  # anchor - another signer's signature (repulsion of random forgeries)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar; zero (with a graph) when no anchor is valid, never NaN
    n_valid: torch.Tensor  # anchors with at least one positive and one negative
    n_hard: torch.Tensor  # triplets where the negative is more similar than the positive
    n_easy: torch.Tensor
    counts: dict[str, torch.Tensor] = field(default_factory=dict)  # loss-specific, summed over an epoch
    pairs: BatchSimilarities | None = None  # set by MetricLoss.forward


class MetricLoss(nn.Module):
    """Base class: subclasses implement :meth:`compute` on the similarity matrix and pair masks."""

    def forward(self, embeddings: torch.Tensor, labels: SignatureLabels) -> LossOutput:
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()  # similarities near 1 need more than 8 mantissa bits
        sim = embeddings @ embeddings.T
        positive, skilled, other = labels.role_masks()
        negative = skilled | other
        valid = positive.any(1) & negative.any(1)
        out = self.compute(sim, positive, negative, valid)
        out.pairs = BatchSimilarities(sim.detach(), positive, skilled, other)
        return out

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        raise NotImplementedError


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``mask``; 0 (keeping the graph) when the mask is empty. Masked-out NaNs are ignored."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


def gather(sim: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return sim.gather(1, index[:, None])[:, 0]


def cosine_to_distance(sim: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between unit vectors; clamped so the gradient at 0 stays finite."""
    return (2.0 - 2.0 * sim).clamp_min(1e-12).sqrt()


def triplet_output(loss, s_ap, s_an, valid, hard: torch.Tensor | None = None, **counts) -> LossOutput:
    """Counts for one (positive, negative) triplet per anchor; hard defaults to S_an > S_ap."""
    hard = (s_an.detach() > s_ap.detach() if hard is None else hard) & valid
    return LossOutput(loss, valid.sum(), hard.sum(), (valid & ~hard).sum(), counts)
