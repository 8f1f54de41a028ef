"""Saving a matplotlib figure, the one way every picture of the project is written (reports, diagnostics,
previews, explanation maps, case reports). Only matplotlib: the serving install draws with it too."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, target, dpi: int = 110, **kwargs):
    """Every figure of the project is written here: laid out, saved (a path, its folder made, or a file
    object), and closed, so no figure stays open in a long process."""
    try:
        fig.tight_layout()
        if isinstance(target, (str, Path)):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=dpi, **kwargs)
    finally:
        plt.close(fig)
    return target
