"""Pictures of explanation maps: each image of a pair beside its map overlaid on it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the app draws overlays without torch
    from sigverify.explain.attribution import PairMaps


def overlay(image: np.ndarray, attribution: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8: the signature as on paper (dark ink on white) under the map's colours (jet)."""
    import cv2

    paper = 255 - image.astype(np.uint8)
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(attribution, 0, 1)), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8((1 - alpha) * np.repeat(paper[..., None], 3, axis=2) + alpha * heat)


def save_pair_figure(maps: "PairMaps", reference: np.ndarray, questioned: np.ndarray, file: str | Path,
                     title: str = "") -> Path:
    """A 2 x 2 figure: reference and questioned signature (rows), as seen by the model and with its map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sigverify.evaluation.figure import save_figure

    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    height, width = reference.shape
    fig, axes = plt.subplots(2, 2, figsize=(2 * 3.2, 2 * 3.2 * height / width + 0.9), squeeze=False)
    rows = (("reference", reference, maps.reference, maps.reference_ink_ratio),
            ("questioned", questioned, maps.questioned, maps.questioned_ink_ratio))
    for row, (name, image, attribution, ratio) in zip(axes, rows):
        row[0].imshow(255 - image, cmap="gray", vmin=0, vmax=255)
        row[0].set_title(name, fontsize=9)
        row[1].imshow(overlay(image, attribution))
        row[1].set_title(f"map; ink ratio {ratio:.2f}", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(title or f"similarity {maps.similarity:.3f}", fontsize=10)
    return save_figure(fig, file, dpi=120)
