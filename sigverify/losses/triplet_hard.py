"""Batch-hard triplet loss (Hermans et al. 2017): per anchor, the hardest positive and negative.

Distances are Euclidean between L2-normalised embeddings; loss = mean over valid anchors of
max(0, D_ap - D_an + margin).
"""
from __future__ import annotations

import torch.nn.functional as F

from sigverify.losses.base import LossOutput, MetricLoss, cosine_to_distance, gather, masked_mean, select, triplet_output


class BatchHardTripletLoss(MetricLoss):
    def __init__(self, margin: float = 0.5):
        super().__init__()
        self.margin = margin

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        s_ap = gather(sim, select(sim, positive, most_similar=False))  # farthest positive
        s_an = gather(sim, select(sim, negative, most_similar=True))  # closest negative
        losses = F.relu(cosine_to_distance(s_ap) - cosine_to_distance(s_an) + self.margin)
        return triplet_output(masked_mean(losses, valid), s_ap, s_an, valid)
