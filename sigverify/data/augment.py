"""Training augmentation with albumentations (validation and test images are never augmented).

Geometry follows the write-up (small rotation, translation, scale, shear). Against the
stroke-width / ink-darkness shortcut (forgeries in CEDAR are often darker or thicker), strokes are
randomly thinned or thickened and the ink intensity is randomised, so neither carries the label.

Stroke width is changed *relative to the strokes of the image at hand* (:class:`StrokeWidth`): a
fixed 2-3 px kernel on a 64x128 image, whose strokes are about one pixel wide, erased most of the
ink (16 % left on average) and blotted the rest.
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
    stroke_scale_min: float = 0.6  # stroke width (ink mass) scaled by a factor in [min, max], log-uniform
    stroke_scale_max: float = 1.6
    ink_intensity_min: float = 0.6  # ink brightness scaled into [min, 1]
    ink_intensity_p: float = 0.5
    elastic_p: float = 0.0  # elastic distortion: costly, off unless asked for

    def __post_init__(self) -> None:
        if not 0.5 <= self.stroke_scale_min <= 1.0 <= self.stroke_scale_max <= 2.0:
            raise ValueError("stroke_scale_min/max must satisfy 0.5 <= min <= 1 <= max <= 2 (ink mass kept "
                             f"between half and double), got {self.stroke_scale_min}, {self.stroke_scale_max}")


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
        steps.append(StrokeWidth(config.stroke_scale_min, config.stroke_scale_max, p=config.stroke_width_p))
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


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


class StrokeWidth(A.ImageOnlyTransform):
    """Scale the stroke width by a random factor in [low, high] (log-uniform), relative to the image's
    own strokes, at any resolution.

    Each 3x3 grey-level dilation (erosion) widens (narrows) every stroke by about a pixel on each
    side; a stroke's ink mass is its width times its length, so the image's ink mass tells how far
    to go. Whole steps are taken while they stay within the target mass, and the last step is blended
    in by the fraction that reaches it. On a thin stroke (one pixel at 64x128) thinning thus fades it
    partially instead of erasing it, which is what a thinner pen looks like after downscaling.
    """

    def __init__(self, low: float = 0.6, high: float = 1.6, p: float = 0.5):
        super().__init__(p=p)
        self.low, self.high = low, high

    def get_params_dependent_on_data(self, params, data):
        return {"factor": float(np.exp(self.py_random.uniform(np.log(self.low), np.log(self.high))))}

    def apply(self, img: np.ndarray, factor: float = 1.0, **params) -> np.ndarray:
        return scale_stroke_width(img, factor)


def scale_stroke_width(image: np.ndarray, factor: float, max_steps: int = 8) -> np.ndarray:
    """``image`` (uint8, ink bright on black) with its ink mass scaled by ``factor`` through grey-level
    morphology (dilation for factor > 1, erosion below)."""
    # Stays in uint8 throughout (cv2's uint8 morphology and sums are several times faster than float).
    mass = float(cv2.sumElems(image)[0])
    if factor == 1.0 or mass == 0.0:
        return image
    target = factor * mass
    operation = cv2.dilate if factor > 1 else cv2.erode
    current, current_mass = image, mass
    for _ in range(max_steps):
        following = operation(current, _CROSS)
        following_mass = float(cv2.sumElems(following)[0])
        if following_mass == current_mass:  # nothing left to change (blank, or the canvas is full)
            break
        if (following_mass - target) * (current_mass - target) <= 0:  # the target lies within this step
            share = (target - current_mass) / (following_mass - current_mass)
            return cv2.addWeighted(current, 1.0 - share, following, share, 0.0)  # rounds and saturates
        current, current_mass = following, following_mass
    return current
