"""The one meaning of a label everywhere in sigverify: (signer id, is the signature genuine).

A forgery of signer s carries signer s (whose signature it imitates) and is_genuine False.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

GENUINE = "genuine"
FORGERY = "forgery"
LABELS = (GENUINE, FORGERY)


@dataclass(frozen=True)
class SignatureLabels:
    """Batch labels: ``signer`` (long, [B]) and ``genuine`` (bool, [B])."""

    signer: torch.Tensor
    genuine: torch.Tensor

    def __post_init__(self) -> None:
        if self.signer.shape != self.genuine.shape or self.signer.ndim != 1:
            raise ValueError(
                f"signer and genuine must be 1-d and of equal length, got {tuple(self.signer.shape)} "
                f"and {tuple(self.genuine.shape)}"
            )

    def __len__(self) -> int:
        return self.signer.numel()

    def role_masks(self, rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boolean [B, B] masks of (anchor, positive), (anchor, its own skilled forgery) and
        (anchor, another signer's signature) pairs; the last two are the negatives. ``rows``: only
        those anchor rows (to go through a large set in blocks)."""
        index = torch.arange(len(self), device=self.signer.device)
        same_signer = self.signer[rows, None] == self.signer[None, :]
        not_self = index[rows, None] != index[None, :]
        anchor = self.genuine[rows, None]
        positive = anchor & self.genuine[None, :] & same_signer & not_self
        skilled = anchor & same_signer & ~self.genuine[None, :]
        other = anchor & ~same_signer
        return positive, skilled, other
