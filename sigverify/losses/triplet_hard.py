"""Batch-hard triplet loss (Hermans et al. 2017): per anchor, the hardest positive and negative.

Distances are Euclidean between L2-normalised embeddings; loss = mean over valid anchors of
max(0, D_ap - D_an + margin). The mining is a setting (``positives``, ``negatives``: hard or easy, see
``mining.py``); the defaults are the paper's batch-hard choice.
"""
from __future__ import annotations

from typing import get_args

import torch.nn.functional as F

from sigverify.losses.base import LossOutput, MetricLoss, cosine_to_distance, gather, masked_mean, triplet_output
from sigverify.losses.mining import OnePerAnchor, check_strategy, mine_one


class BatchHardTripletLoss(MetricLoss):
    def __init__(self, margin: float = 0.5, positives: OnePerAnchor = "hard", negatives: OnePerAnchor = "hard"):
        super().__init__()
        check_strategy("positives", positives, get_args(OnePerAnchor))
        check_strategy("negatives", negatives, get_args(OnePerAnchor))
        self.margin, self.positives, self.negatives = margin, positives, negatives

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        s_ap = gather(sim, mine_one(sim, positive, self.positives, "positive"))
        s_an = gather(sim, mine_one(sim, negative, self.negatives, "negative"))
        losses = F.relu(cosine_to_distance(s_ap) - cosine_to_distance(s_an) + self.margin)
        return triplet_output(masked_mean(losses, valid), s_ap, s_an, valid)
