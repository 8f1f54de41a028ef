"""Explanation maps: what drives the similarity between two signatures (Grad-CAM family, the
``grad-cam`` package), how much of it falls on ink, and the pictures and report sections built on them."""

from dataclasses import dataclass
from typing import Literal, get_args

# The Grad-CAM family methods of `sigverify explain` and `test --explain` (the CLI rejects any other name).
ExplainMethod = Literal["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigengradcam"]
METHODS = get_args(ExplainMethod)  # the --method choices


@dataclass
class ExplainConfig:
    """``sigverify test --explain N`` (``--report.explain.maps N``): maps of the N most confident test errors
    and the ink-attribution distribution over ``sample`` test pairs, written beside the test report."""

    maps: int = 0
    sample: int = 200
    method: ExplainMethod = "gradcam"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"explain method must be one of {METHODS}, got {self.method!r}")
        if self.maps < 0 or self.sample < 0:
            raise ValueError(f"explain maps and sample count maps and pairs (>= 0), got {self.maps}, {self.sample}")
