"""Batch-semi-hard triplet loss (FaceNet, Schroff et al. 2015).

For every anchor-positive pair, the semi-hard negatives are those with D_ap < D_an < D_ap + margin;
the loss is the mean of max(0, D_ap - D_an + margin) over all such triplets. A pair with no semi-hard
negative uses its hardest negative instead (``fallback="hardest"``) or is dropped (``"none"``, as
pytorch-metric-learning's semihard miner does). Built on a [B, B, B] triplet mask: no host syncs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sigverify.losses.base import LossOutput, MetricLoss, cosine_to_distance

FALLBACKS = ("hardest", "none")


class BatchSemiHardTripletLoss(MetricLoss):
    def __init__(self, margin: float = 0.5, fallback: str = "hardest"):
        super().__init__()
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        self.margin, self.fallback = margin, fallback

    def triplet_mask(self, dist, positive, negative, valid) -> torch.Tensor:
        """[a, p, n] True where (a, p, n) is a triplet the loss uses."""
        pairs = positive & valid[:, None]
        d_ap, d_an = dist[:, :, None], dist[:, None, :]
        candidates = pairs[:, :, None] & negative[:, None, :]
        band = candidates & (d_an > d_ap) & (d_an < d_ap + self.margin)
        if self.fallback == "hardest":
            hardest = dist.masked_fill(~negative, float("inf")).argmin(1)  # per anchor
            fallback = F.one_hot(hardest, dist.shape[1]).bool()[:, None, :] & candidates
            band = band | (fallback & ~band.any(2, keepdim=True))
        return band

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        dist = cosine_to_distance(sim)
        with torch.no_grad():
            used = self.triplet_mask(dist.detach(), positive, negative, valid)
        losses = F.relu(dist[:, :, None] - dist[:, None, :] + self.margin)
        loss = torch.where(used, losses, torch.zeros_like(losses)).sum() / used.sum().clamp_min(1)
        s = sim.detach()
        hard = used & (s[:, None, :] > s[:, :, None])
        n_used = used.sum()
        return LossOutput(loss, (used.any(2).any(1)).sum(), hard.sum(), n_used - hard.sum())
