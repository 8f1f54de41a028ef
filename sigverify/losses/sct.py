"""Selectively Contrastive Triplet loss (Xuan et al., "Hard negative examples are hard, but useful", ECCV 2020).

Per anchor: the easiest positive (most similar) and the hardest negative (most similar), selected
on detached similarities. A triplet is hard when S_an > S_ap or S_an > ``hard_threshold`` (0.8, as
the official code, ``littleredxh/HardNegative``, ``_code/Loss.py``; ``None`` drops that rule): hard
triplets contribute lambda * S_an (push the negative away, leave the positive alone); easy ones
-log(exp(S_ap/t) / (exp(S_ap/t) + exp(S_an/t))). Total: mean over valid anchors. The selection is the
loss's mining (``positives="easy"``, ``negatives="hard"``, see ``mining.py``), a setting like any other.
"""
from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from sigverify.losses.base import LossOutput, MetricLoss, gather, masked_mean, triplet_output
from sigverify.losses.mining import OnePerAnchor, check_strategy, mine_one


class SCTLoss(MetricLoss):
    def __init__(self, lam: float = 1.0, temperature: float = 0.1, hard_threshold: float | None = 0.8,
                 positives: OnePerAnchor = "easy", negatives: OnePerAnchor = "hard"):
        super().__init__()
        check_strategy("positives", positives, get_args(OnePerAnchor))
        check_strategy("negatives", negatives, get_args(OnePerAnchor))
        self.lam, self.temperature, self.hard_threshold = lam, temperature, hard_threshold
        self.positives, self.negatives = positives, negatives

    def triplets(self, sim, positive, negative, valid):
        """(S_ap, S_an, hard) per anchor row; rows outside ``valid`` are meaningless."""
        s_ap = gather(sim, mine_one(sim, positive, self.positives, "positive"))
        s_an = gather(sim, mine_one(sim, negative, self.negatives, "negative"))
        hard = s_an.detach() > s_ap.detach()
        if self.hard_threshold is not None:
            hard = hard | (s_an.detach() > self.hard_threshold)
        return s_ap, s_an, hard

    def per_anchor(self, s_ap, s_an, hard) -> torch.Tensor:
        logits = torch.stack([s_ap, s_an], 1) / self.temperature
        easy_loss = -F.log_softmax(logits, dim=1)[:, 0]
        return torch.where(hard, self.lam * s_an, easy_loss)

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        s_ap, s_an, hard = self.triplets(sim, positive, negative, valid)
        loss = masked_mean(self.per_anchor(s_ap, s_an, hard), valid)
        return triplet_output(loss, s_ap, s_an, valid, hard)
