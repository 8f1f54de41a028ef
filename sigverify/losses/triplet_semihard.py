"""Batch-semi-hard triplet loss (FaceNet, Schroff et al. 2015).

For every anchor-positive pair, the semi-hard negatives are those with D_ap < D_an < D_ap + margin;
the loss is the mean of max(0, D_ap - D_an + margin) over all such triplets. A pair with no semi-hard
negative uses its hardest negative instead (``fallback="hardest"``) or is dropped (``"none"``, as
pytorch-metric-learning's semihard miner does); the mining is ``mining.mine_semihard``. Built on a [B, B, B]
triplet mask: no host syncs.
"""
from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from sigverify.losses.base import LossOutput, MetricLoss, cosine_to_distance
from sigverify.losses.mining import SemiHardFallback, check_strategy, mine_semihard


class BatchSemiHardTripletLoss(MetricLoss):
    def __init__(self, margin: float = 0.5, fallback: SemiHardFallback = "hardest"):
        super().__init__()
        check_strategy("fallback", fallback, get_args(SemiHardFallback))
        self.margin, self.fallback = margin, fallback

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        dist = cosine_to_distance(sim)
        with torch.no_grad():
            used = mine_semihard(dist.detach(), positive, negative, valid, self.margin, self.fallback)
        losses = F.relu(dist[:, :, None] - dist[:, None, :] + self.margin)
        loss = torch.where(used, losses, torch.zeros_like(losses)).sum() / used.sum().clamp_min(1)
        s = sim.detach()
        hard = used & (s[:, None, :] > s[:, :, None])
        n_used = used.sum()
        return LossOutput(loss, (used.any(2).any(1)).sum(), hard.sum(), n_used - hard.sum())
