"""Explanation maps: what drives the similarity between two signatures (Grad-CAM family, the
``grad-cam`` package), how much of it falls on ink, and the pictures and report sections built on them."""

METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigengradcam")  # the --method choices
