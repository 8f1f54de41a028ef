"""Mining: which positives and negatives of the batch each anchor's loss term uses, as a part of its own
(pytorch-metric-learning's miners, written on the batch's similarity matrix and role masks rather than index
tuples, so a training step makes no host-device synchronisation).

Strategies, per anchor, within its row's positives (its signer's other genuine signatures) or negatives (its
skilled forgeries and other signers' signatures):

- ``hard``: the positive least similar to the anchor, the negative most similar;
- ``easy``: the positive most similar, the negative least similar;
- ``all``: every positive or every negative of the row;
- semi-hard (triplets, :func:`mine_semihard`): for each anchor-positive pair, the negatives farther than the
  positive by less than the margin (FaceNet's band).

Which strategies a loss takes depends on its form: one pair per anchor (``triplet_hard``, SCT) takes ``hard``
or ``easy``; LSC+'s pull, a mean over the mined positives, takes ``all`` too; ``triplet_semihard`` is the
semi-hard miner's loss; SupCon and co-tuplet weigh every pair by design and mine nothing.

Mining decides on detached similarities; gradients flow only through the similarities a loss gathers with the
result. A loss names its strategies as constructor arguments (``create_loss("sct", positives="hard")``), so a
config swaps the mining without touching the loss.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

Strategy = Literal["hard", "easy", "all"]
OnePerAnchor = Literal["hard", "easy"]  # the strategies that give each anchor a single pair
Role = Literal["positive", "negative"]
SemiHardFallback = Literal["hardest", "none"]


def check_strategy(name: str, value: str, allowed=get_args(Strategy)) -> None:
    """Refuse a strategy the loss cannot use, naming the argument and the valid choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def mine_one(sim: torch.Tensor, mask: torch.Tensor, strategy: OnePerAnchor, role: Role) -> torch.Tensor:
    """Per row, the column of the ``strategy`` pair among ``mask``'s (a positive or a negative of the anchor).

    Rows with an empty mask get an arbitrary column; callers mask those rows out.
    """
    # a hard positive is the least similar one, a hard negative the most similar one
    most_similar = (strategy == "hard") == (role == "negative")
    masked = sim.detach().masked_fill(~mask, float("-inf") if most_similar else float("inf"))
    return masked.argmax(1) if most_similar else masked.argmin(1)


def mine_semihard(dist: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, valid: torch.Tensor,
                  margin: float, fallback: SemiHardFallback = "hardest") -> torch.Tensor:
    """[a, p, n] True where (a, p, n) is a semi-hard triplet: every positive p of a valid anchor a, with the
    negatives n where D_ap < D_an < D_ap + margin (``dist``: detached distances). A pair with no such negative
    takes the anchor's hardest negative (``fallback="hardest"``) or none (``"none"``, as pytorch-metric-learning's
    semihard miner does)."""
    pairs = positive & valid[:, None]
    d_ap, d_an = dist[:, :, None], dist[:, None, :]
    candidates = pairs[:, :, None] & negative[:, None, :]
    band = candidates & (d_an > d_ap) & (d_an < d_ap + margin)
    if fallback == "hardest":
        hardest = dist.masked_fill(~negative, float("inf")).argmin(1)  # per anchor
        nearest = F.one_hot(hardest, dist.shape[1]).bool()[:, None, :] & candidates
        band = band | (nearest & ~band.any(2, keepdim=True))
    return band
