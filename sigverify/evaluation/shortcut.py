"""The shortcut floor: how far simple image statistics alone get under the same protocol.

Skilled forgeries are often darker, thicker or differently sized than the genuine signatures they
imitate (CEDAR's are), and a network can learn that instead of the signature's form. A baseline
that sees only such statistics (ink amount, mean ink grey, ink bounding box, aspect, stroke width)
is scored exactly as the model is: the same protocol and comparisons, with the similarity of two
images being minus the distance between their standardised statistics, and its threshold fixed on
the same validation signers. A model whose EER barely beats this floor has learned a shortcut.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from sigverify.evaluation.metrics import auc, eer, rates_at
from sigverify.evaluation.report import EvalConfig, choose_threshold, protocol_scores

FEATURES = ("ink_amount", "mean_ink_grey", "box_height", "box_width", "aspect", "stroke_width")


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    """[B, len(FEATURES)] statistics of uint8 images [B, 1, H, W] with ink bright on black."""
    x = images.float() / 255.0
    height, width = x.shape[-2:]
    ink_mask = x > 0
    mass = x.sum(dim=(1, 2, 3))
    ink_pixels = ink_mask.sum(dim=(1, 2, 3)).clamp_min(1)
    rows, cols = ink_mask.any(dim=3)[:, 0], ink_mask.any(dim=2)[:, 0]  # [B, H], [B, W]
    box_height = _extent(rows) / height
    box_width = _extent(cols) / width
    stroke_width = 2 * mass / _growth(x, mass)
    return torch.stack([mass / (height * width), mass / ink_pixels, box_height, box_width,
                        box_width * width / (box_height * height).clamp_min(1e-6), stroke_width], dim=1)


def _growth(x: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Ink added per image by one dilation, the same in every stroke direction: about twice the
    strokes' length, so ``2 * mass / growth`` is their width. A 3x3 square widens a diagonal stroke
    by 2*sqrt(2) px and a cross by sqrt(2), both a straight one by 2: their geometric mean is 2 for all."""
    square = F.max_pool2d(x, 3, stride=1, padding=1)
    padded = F.pad(x, (1, 1, 1, 1))
    cross = torch.stack([x, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2],
                         padded[..., 1:-1, 2:]]).amax(dim=0)
    grown_square = square.sum(dim=(1, 2, 3)) - mass
    grown_cross = cross.sum(dim=(1, 2, 3)) - mass
    return (grown_square * grown_cross).clamp_min(1e-12).sqrt()


def _extent(any_ink: torch.Tensor) -> torch.Tensor:
    """Per row of a [B, N] mask: last - first inked index + 1 (0 when there is no ink)."""
    index = torch.arange(any_ink.shape[1], device=any_ink.device)
    first = torch.where(any_ink, index, any_ink.shape[1]).min(dim=1).values
    last = torch.where(any_ink, index, -1).max(dim=1).values
    return (last - first + 1).clamp_min(0).float()


def negative_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Similarity of two sets of statistics vectors: minus their Euclidean distance, [len(a), len(b)]."""
    return -np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


def standardize(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array scaled by the mean and standard deviation of ``reference`` (the validation images)."""
    mean, std = reference.mean(0), reference.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(x - mean) / std for x in (reference, *others)]


def statistics_floor(validation: tuple, test: tuple, config: EvalConfig) -> dict:
    """The floor's figures. ``validation``/``test``: (image statistics [N, F], signer ids, genuine flags);
    the statistics are standardised on the validation images, the threshold chosen on them as the
    model's is (``config``), then applied to the test images."""
    val_stats, test_stats = standardize(validation[0], test[0])
    val_scores = protocol_scores(val_stats, validation[1], validation[2], config, negative_distance)
    test_scores = protocol_scores(test_stats, test[1], test[2], config, negative_distance)
    threshold, _ = choose_threshold(val_scores, replace(config, threshold_from=None))  # the floor's own
    return {"features": list(FEATURES), "eer": eer(test_scores.genuine, test_scores.skilled)[0],
            "hter": rates_at(threshold, test_scores.genuine, test_scores.skilled)["hter"],
            "auc": auc(test_scores.genuine, test_scores.skilled), "threshold": threshold}
