"""Co-tuplet loss (Huang & Lu, "Multiscale Feature Learning Using Co-Tuplet Loss for Offline
Handwritten Signature Verification", arXiv 2308.00428; MS-SigNet).

Per genuine anchor a, with squared Euclidean distances d (2 - 2 S for unit vectors), the hardest
positive d_p* = max over positives and the hardest negative d_n* = min over negatives:

    L(a) = log(1 + sum_{p : d_ap >= d_n* - eps} exp(d_ap - d_n*)
                 + sum_{n : d_an <= d_p* + eps} exp(d_p* - d_an))

Every positive that is not clearly closer than the hardest negative, and every negative that is not
clearly farther than the hardest positive, contributes: a soft-margin tuplet over many positives and
negatives, weighted towards the informative ones. Gradients flow through d_p* and d_n* too, as in
the authors' code (``co_tuplet_loss.py``, ``TupletLoss``; eps 0.2 or 0.3 in their config). Total:
mean over valid anchors. Differences from the authors' setting, all stated: their negatives are the
anchor's own five skilled forgeries, ours are all of the batch's negatives (its skilled forgeries and
other signers'); their embeddings are not L2-normalised before the loss (1024-d, distances unbounded),
ours are unit vectors (distances in [0, 4], so eps and the exp terms act on another scale); their
total adds the same loss on six regional embeddings (weight 1), ours is the global one; and a term
whose difference is exactly 0 counts here (theirs drops it, a measure-zero case). PyTorch Metric
Learning has no co-tuplet loss, so the only cross-check is the per-anchor loop of the tests.
"""
from __future__ import annotations

import torch

from sigverify.losses.base import LossOutput, MetricLoss, masked_mean, triplet_output


class CoTupletLoss(MetricLoss):
    def __init__(self, epsilon: float = 0.2):
        super().__init__()
        self.epsilon = epsilon

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        dist = 2.0 - 2.0 * sim
        zero = torch.zeros_like(dist)
        # Hardest pairs; empty rows get a placeholder, masked out of the loss by ``valid``.
        hardest_pos = torch.where(positive, dist, zero - 1.0).max(1).values
        hardest_neg = torch.where(negative, dist, zero + 5.0).min(1).values
        near_pos = positive & (dist.detach() >= hardest_neg.detach()[:, None] - self.epsilon)
        near_neg = negative & (dist.detach() <= hardest_pos.detach()[:, None] + self.epsilon)
        pos_terms = torch.where(near_pos, torch.exp(dist - hardest_neg[:, None]), zero).sum(1)
        neg_terms = torch.where(near_neg, torch.exp(hardest_pos[:, None] - dist), zero).sum(1)
        loss = masked_mean(torch.log1p(pos_terms + neg_terms), valid)
        active = ((near_pos | near_neg) & valid[:, None]).sum()
        return triplet_output(loss, 1 - hardest_pos / 2, 1 - hardest_neg / 2, valid,
                              active_terms=active, candidate_terms=((positive | negative) & valid[:, None]).sum())
