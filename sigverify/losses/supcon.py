"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), the modern rival to the write-up's losses.

For a genuine anchor i with positives P(i): -1/|P(i)| sum_p log( exp(S_ip/t) / sum_{j != i} exp(S_ij/t) ),
the denominator running over all its positives and negatives (a forgery is only ever a negative).
Mean over valid anchors.
"""
from __future__ import annotations

import torch

from sigverify.losses.base import LossOutput, MetricLoss, masked_mean


class SupConLoss(MetricLoss):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        # Rows that are not valid anchors keep a finite softmax (all columns) and are masked out after.
        in_softmax = (positive | negative) | ~valid[:, None]
        logits = (sim / self.temperature).masked_fill(~in_softmax, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)
        per_anchor = -pos_log_prob / positive.sum(1).clamp_min(1)
        s = sim.detach()
        easiest_pos = s.masked_fill(~positive, float("-inf")).max(1).values
        hardest_neg = s.masked_fill(~negative, float("-inf")).max(1).values
        hard = (hardest_neg > easiest_pos) & valid
        return LossOutput(masked_mean(per_anchor, valid), valid.sum(), hard.sum(), (valid & ~hard).sum())
