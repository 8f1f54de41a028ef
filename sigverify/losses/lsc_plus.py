"""LSC+ (the design write-up): SCT plus a positive pull, mu * mean(relu(margin - S_ap)).

As written, the pull acts on the positive SCT selects, the *easiest* one (``pull_positives="easy"``,
m = 0.5): once a signer's closest pair of genuine signatures is more similar than the margin, which
happens early in training, the pull does nothing and LSC+ is SCT. What the write-up meant to keep
together, all of a signer's genuine signatures, is reached by mining the pull's positives otherwise
(``mining.py``): ``"hard"`` (the least similar positive) or ``"all"`` (every positive pair), each with
its own margin. The
``pull_active`` / ``pull_terms`` counts show how often the pull acts (``train/pull_active_fraction``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sigverify.losses.base import LossOutput, gather, masked_mean, triplet_output
from sigverify.losses.mining import OnePerAnchor, Strategy, check_strategy, mine_one
from sigverify.losses.sct import SCTLoss


class LSCPlusLoss(SCTLoss):
    def __init__(self, mu: float = 0.5, margin: float = 0.5, lam: float = 1.0, temperature: float = 0.1,
                 hard_threshold: float | None = 0.8, positives: OnePerAnchor = "easy", negatives: OnePerAnchor = "hard",
                 pull_positives: Strategy = "easy"):
        super().__init__(lam=lam, temperature=temperature, hard_threshold=hard_threshold,
                         positives=positives, negatives=negatives)
        check_strategy("pull_positives", pull_positives)
        self.mu, self.margin, self.pull_positives = mu, margin, pull_positives

    def pull(self, sim, positive, valid, s_ap) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean pull over valid anchors, terms where it acts, terms in all)."""
        if self.pull_positives == "all":
            terms = positive & valid[:, None]
            gaps = F.relu(self.margin - sim)
            per_anchor = torch.where(terms, gaps, torch.zeros_like(gaps)).sum(1) / positive.sum(1).clamp_min(1)
            return masked_mean(per_anchor, valid), (terms & (gaps.detach() > 0)).sum(), terms.sum()
        # the contrastive term's positive, when the pull mines the same one: no second gather
        same = self.pull_positives == self.positives
        target = s_ap if same else gather(sim, mine_one(sim, positive, self.pull_positives, "positive"))
        gaps = F.relu(self.margin - target)
        return masked_mean(gaps, valid), (valid & (gaps.detach() > 0)).sum(), valid.sum()

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        s_ap, s_an, hard = self.triplets(sim, positive, negative, valid)
        sct = masked_mean(self.per_anchor(s_ap, s_an, hard), valid)
        pull, active, terms = self.pull(sim, positive, valid, s_ap)
        return triplet_output(sct + self.mu * pull, s_ap, s_an, valid, hard, pull_active=active, pull_terms=terms)
