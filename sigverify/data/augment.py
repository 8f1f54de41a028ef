"""Training augmentation with albumentations (validation and test images are never augmented).

Geometry follows the write-up (small rotation, translation, scale, shear). Against the
stroke-width / ink-darkness shortcut (forgeries in CEDAR are often darker or thicker), strokes are
randomly thinned or thickened and the ink intensity is randomised, so neither carries the label.
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class AugmentConfig:
    enabled: bool = True
    rotate: float = 5.0  # degrees, +-
    translate: float = 0.05  # fraction of the image, +- (0.1 in the write-up pushes ink off the wide canvas)
    scale_min: float = 0.9
    scale_max: float = 1.05
    shear: float = 5.0  # degrees, +-
    affine_p: float = 0.9
    stroke_width_p: float = 0.5  # chance to thin or thicken the strokes
    stroke_width_max: int = 3  # largest structuring element (px)
    ink_intensity_min: float = 0.6  # ink brightness scaled into [min, 1]
    ink_intensity_p: float = 0.5
    elastic_p: float = 0.0  # elastic distortion: costly, off unless asked for


def build_train_transform(config: AugmentConfig) -> A.Compose | None:
    """The albumentations pipeline for training images (uint8, ink bright on black)."""
    if not config.enabled:
        return None
    steps = [
        A.Affine(
            rotate=(-config.rotate, config.rotate),
            translate_percent=(-config.translate, config.translate),
            scale=(config.scale_min, config.scale_max),
            shear=(-config.shear, config.shear),
            interpolation=cv2.INTER_LINEAR,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=config.affine_p,
        ),
    ]
    if config.stroke_width_p > 0:
        steps.append(
            A.OneOf(
                [
                    A.Morphological(scale=(2, config.stroke_width_max), operation="dilation"),
                    A.Morphological(scale=(2, config.stroke_width_max), operation="erosion"),
                ],
                p=config.stroke_width_p,
            )
        )
    if config.elastic_p > 0:
        steps.append(A.ElasticTransform(alpha=30, sigma=6, border_mode=cv2.BORDER_CONSTANT, fill=0, p=config.elastic_p))
    if config.ink_intensity_p > 0:
        steps.append(
            InkIntensity(low=config.ink_intensity_min, p=config.ink_intensity_p))
    return A.Compose(steps)


class InkIntensity(A.ImageOnlyTransform):
    """Scale the ink brightness by a random factor in [low, 1], so darkness carries no label."""

    def __init__(self, low: float = 0.6, p: float = 0.5):
        super().__init__(p=p)
        self.low = low

    def get_params_dependent_on_data(self, params, data):
        return {"factor": self.py_random.uniform(self.low, 1.0)}

    def apply(self, img: np.ndarray, factor: float = 1.0, **params) -> np.ndarray:
        return cv2.convertScaleAbs(img, alpha=factor)
