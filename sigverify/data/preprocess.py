"""Deterministic preprocessing: grayscale -> (denoise) -> Otsu -> crop to ink -> place -> resize + pad.

The output is uint8 [H, W] with ink bright (255) on a black (0) background, the polarity CNNs
with zero padding expect. Every step is set by :class:`PreprocessConfig`. With ``binarize: false`` the ink
keeps its grey levels; ``ink_tone: equalize`` then maps every image's ink levels onto one distribution,
a control that removes pen darkness (a capture cue of forgeries written with other pens) and keeps the
strokes' shape and inner texture.

Two placements: ``fit`` scales every signature's ink box to fill the input (size is normalised away);
``centre_of_mass`` is sigver's canvas (Hafemann et al.): the ink, at its scan's scale, is centred by its
centre of mass on a fixed canvas of source pixels, which is then scaled to the input, so a signature's size
relative to the others of its data set is kept.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sigverify.data.errors import DataError
from sigverify.data.images import DEFAULT_MAX_PIXELS, check_max_pixels, load_grayscale

INK_TONES = ("keep", "equalize")
PLACEMENTS = ("fit", "centre_of_mass")
INK_TONE_RANGE = (96, 255)  # equalized ink: uniform over these levels (inverted: 255 = the darkest ink)


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class PreprocessConfig:
    """Preprocessing settings. ``height`` x ``width`` is the model input (wide by default)."""

    height: int = 192
    width: int = 384
    denoise: str = "none"  # none | gaussian | median: light smoothing before Otsu
    denoise_kernel: int = 3
    binarize: bool = True  # False keeps the ink's grey levels (inverted) with the paper zeroed
    ink_tone: str = "keep"  # grey ink: keep | equalize (each image's ink levels mapped by rank onto INK_TONE_RANGE)
    min_speck_area: int = 16  # ink components smaller than this (px, at source size) are ignored
    margin: float = 0.02  # placement fit: padding kept around the ink box, as a fraction of its longer side
    placement: str = "fit"  # fit | centre_of_mass (sigver's canvas; needs canvas_height and canvas_width)
    # centre_of_mass: the canvas in source pixels, as large as the data set's largest signature (one scan
    # resolution per data set: a canvas keeps sizes, so data sets scanned at other scales need their own)
    canvas_height: int = 0
    canvas_width: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.denoise not in ("none", "gaussian", "median"):
            raise ValueError(f"denoise must be one of none, gaussian, median; got {self.denoise!r}")
        if self.ink_tone not in INK_TONES:
            raise ValueError(f"ink_tone must be one of {', '.join(INK_TONES)}; got {self.ink_tone!r}")
        if self.ink_tone != "keep" and self.binarize:
            raise ValueError("ink_tone equalize acts on grey ink: set binarize false too")
        self._check_placement()
        check_max_pixels(self.max_pixels)
        if self.height < 8 or self.width < 8:
            raise ValueError(f"input size {self.height}x{self.width} is too small (min 8x8)")
        if self.denoise != "none" and self.denoise_kernel % 2 == 0:
            raise ValueError(f"denoise_kernel must be odd, got {self.denoise_kernel}")

    def _check_placement(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {self.placement!r}")
        canvas = (self.canvas_height, self.canvas_width)
        if self.placement == "centre_of_mass" and min(canvas) < 8:
            raise ValueError("placement centre_of_mass needs canvas_height and canvas_width (source pixels, >= 8): "
                             f"got {canvas[0]}x{canvas[1]}")
        if canvas[0] * canvas[1] > self.max_pixels:
            raise ValueError(f"canvas {canvas[0]}x{canvas[1]} is over max_pixels ({self.max_pixels})")
        if self.placement == "fit" and any(canvas):
            raise ValueError("canvas_height and canvas_width apply to placement centre_of_mass only "
                             "(placement fit scales each ink box to the input)")

    def fingerprint(self) -> str:
        """A short stable hash of the settings, part of the cache key."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def preprocess_file(path: str | Path, config: PreprocessConfig) -> np.ndarray:
    """Load and preprocess one image file; errors name the file."""
    gray = load_grayscale(path, max_pixels=config.max_pixels)
    try:
        return preprocess_array(gray, config)
    except ValueError as err:
        raise DataError(path, str(err)) from err


def preprocess_array(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Preprocess a uint8 grayscale page (dark ink on light paper)."""
    smoothed = _denoise(gray, config)
    threshold, _ = cv2.threshold(smoothed, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = smoothed <= threshold
    if gray.max() - gray.min() < 16 or not ink.any() or ink.all():
        raise ValueError("blank page: no ink found")
    ink = _drop_specks(ink, config.min_speck_area)
    if config.binarize:
        foreground = ink.astype(np.uint8) * 255
    else:
        foreground = np.where(ink, 255 - gray, 0).astype(np.uint8)
        if config.ink_tone == "equalize":
            foreground[ink] = equalized_ink(foreground[ink])
    if config.placement == "centre_of_mass":
        top, bottom, left, right = _ink_box(ink, margin=0.0)
        placed = centred_by_mass(foreground[top:bottom, left:right], ink[top:bottom, left:right],
                                 (config.canvas_height, config.canvas_width))
        return fit_to_canvas(placed, config.height, config.width)
    top, bottom, left, right = _ink_box(ink, config.margin)
    return fit_to_canvas(foreground[top:bottom, left:right], config.height, config.width)


def equalized_ink(levels: np.ndarray) -> np.ndarray:
    """Ink levels mapped by their rank onto one distribution, uniform over ``INK_TONE_RANGE``: every image's ink
    gets the same histogram (no darker or lighter pens), while the order of levels, hence the strokes' texture,
    stays. Equal levels stay equal (each gets the middle of its rank interval)."""
    _, inverse, counts = np.unique(levels, return_inverse=True, return_counts=True)
    quantile = (np.cumsum(counts) - counts / 2) / len(levels)
    low, high = INK_TONE_RANGE
    return np.round(low + (high - low) * quantile).astype(np.uint8)[inverse]


def _denoise(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    k = config.denoise_kernel
    if config.denoise == "gaussian":
        return cv2.GaussianBlur(gray, (k, k), 0)
    if config.denoise == "median":
        return cv2.medianBlur(gray, k)
    return gray


def _drop_specks(ink: np.ndarray, min_area: int) -> np.ndarray:
    """Remove ink components smaller than ``min_area`` unless that would remove all ink."""
    if min_area <= 1:
        return ink
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # background
    if not keep[1:].any():
        return ink  # everything is small (a tiny signature): better keep it than blank the page
    return keep[labels]


def _ink_box(ink: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad = int(round(margin * max(bottom - top, right - left)))
    h, w = ink.shape
    return max(0, top - pad), min(h, bottom + pad), max(0, left - pad), min(w, right + pad)


def centred_by_mass(crop: np.ndarray, ink: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """``crop`` (the ink box) pasted unscaled on a zero canvas with its ink's centre of mass at the centre,
    shifted only as far as needed to keep it all on the canvas; along a side longer than the canvas it is
    cropped about its middle instead (sigver's rule: such a canvas is too small for the data set)."""
    out = np.zeros(canvas, dtype=crop.dtype)
    mass_centre = np.argwhere(ink).mean(axis=0)  # mean row, mean column of the ink pixels
    source, target = [], []
    for axis, size in enumerate(canvas):
        length = crop.shape[axis]
        if length > size:
            first = (length - size) // 2
            source.append(slice(first, first + size))
            target.append(slice(0, size))
            continue
        start = min(max(size // 2 - int(round(mass_centre[axis])), 0), size - length)
        source.append(slice(0, length))
        target.append(slice(start, start + length))
    out[tuple(target)] = crop[tuple(source)]
    return out


def fit_to_canvas(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the image fits, then centre it on a zero canvas."""
    h, w = image.shape
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((height, width), dtype=np.uint8)
    y, x = (height - new_h) // 2, (width - new_w) // 2
    canvas[y : y + new_h, x : x + new_w] = resized
    return canvas
