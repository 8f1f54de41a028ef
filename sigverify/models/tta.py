"""Test-time augmentation: an image's embedding averaged with those of shifted copies of it.

A network trained from scratch on a few dozen writers is not fully shift-invariant: moving a signature
by a few pixels moves its embedding. Averaging the embeddings of the image and of four copies shifted
left, right, up and down (by a fraction of the image size within the training augmentation's translate
range, so every view looks like a training image) cancels much of that jitter. It costs five forward
passes per image and changes nothing in training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``images`` [..., H, W] moved down by ``dy`` and right by ``dx`` pixels (negative: up / left);
    what enters is background (0: the images carry bright ink on black)."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


class ShiftAveraged(nn.Module):
    """Wraps an embedding network (or an ensemble): the unit-length mean of its embeddings of the image
    and of the image shifted by ``shift`` x its height up and down and x its width left and right."""

    def __init__(self, network: nn.Module, shift: float):
        super().__init__()
        if not 0.0 < shift < 0.5:
            raise ValueError(f"the test-time shift is a fraction of the image size in (0, 0.5), got {shift}")
        self.network, self.shift = network, shift

    def offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        dy, dx = max(1, round(self.shift * height)), max(1, round(self.shift * width))
        return [(0, 0), (-dy, 0), (dy, 0), (0, -dx), (0, dx)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # int(): the offsets are constants of a model's fixed input size (also in an exported ONNX graph).
        height, width = int(images.shape[-2]), int(images.shape[-1])
        views = [shifted(images, dy, dx) for dy, dx in self.offsets(height, width)]
        # One batch of all views: one pass through the network instead of five smaller ones.
        embeddings = self.network(torch.cat(views)).unflatten(0, (len(views), -1))  # -1: any batch size
        return F.normalize(embeddings.mean(0), dim=1)
