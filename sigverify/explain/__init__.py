"""Explanation maps: what drives the similarity between two signatures (Grad-CAM family, the
``grad-cam`` package), how much of it falls on ink, and the pictures and report sections built on them."""

from typing import get_args

from sigverify.evaluation.report import ExplainMethod

METHODS = get_args(ExplainMethod)  # the --method choices
