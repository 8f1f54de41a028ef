"""LSC+ (the design write-up): SCT plus a positive pull, mu * mean(relu(m - S_ap)).

The pull keeps a signer's genuine signatures together up to similarity ``margin`` and no further,
which SCT alone does not do (it never acts on the positive of a hard triplet).
"""
from __future__ import annotations

import torch.nn.functional as F

from sigverify.losses.base import LossOutput, masked_mean, triplet_output
from sigverify.losses.sct import SCTLoss


class LSCPlusLoss(SCTLoss):
    def __init__(self, mu: float = 0.5, margin: float = 0.5, lam: float = 1.0, temperature: float = 0.1,
                 hard_threshold: float | None = None):
        super().__init__(lam=lam, temperature=temperature, hard_threshold=hard_threshold)
        self.mu, self.margin = mu, margin

    def compute(self, sim, positive, negative, valid) -> LossOutput:
        s_ap, s_an, hard = self.triplets(sim, positive, negative, valid)
        sct = masked_mean(self.per_anchor(s_ap, s_an, hard), valid)
        pull = masked_mean(F.relu(self.margin - s_ap), valid)
        return triplet_output(sct + self.mu * pull, s_ap, s_an, valid, hard)
