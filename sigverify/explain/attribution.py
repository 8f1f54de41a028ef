"""Grad-CAM maps of a similarity, and the ink-attribution ratio.

The embedding network has no class to explain; the target is the cosine similarity of one image's
embedding to the other's (held fixed). Each image of a pair gets its own map: what in the questioned
signature makes it look like (or unlike) the reference, and the other way round. The maps come from
a mid-resolution stage (the last with at least ``MIN_MAP_HEIGHT`` rows at the network's input size):
the last stage of a small input is a few pixels high, too coarse to tell a stroke from the paper
around it.

Ink-attribution ratio: the share of positive attribution that falls on ink pixels. A model that
matches strokes puts most of it on ink; one that matches background artefacts (the write-up's
"Clever Hans" effect) does not. A map is as coarse as its stage (one value per ``reduction`` pixels,
upsampled), so "on ink" means within half a map cell of a stroke (``reach``); with a reach of 0 it
means the stroke pixels themselves. The share of the image counted as ink is what a map spread evenly
would give, and is reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from sigverify.explain import METHODS

MIN_MAP_HEIGHT = 8


@dataclass
class PairMaps:
    """Maps of one comparison, each in [0, 1] at the network's input size (H, W)."""

    similarity: float
    reference: np.ndarray
    questioned: np.ndarray
    reference_ink_ratio: float
    questioned_ink_ratio: float
    reference_ink_share: float  # share of the image counted as ink: what an evenly spread map would score
    questioned_ink_share: float
    reference_stroke_ratio: float  # the ratio on the stroke pixels themselves (no reach)
    questioned_stroke_ratio: float

    def summary(self) -> dict:
        """JSON-ready figures (NaN, a map with no positive attribution, becomes null)."""
        values = {"similarity": self.similarity, "reference_ink_ratio": self.reference_ink_ratio,
                  "questioned_ink_ratio": self.questioned_ink_ratio, "reference_ink_share": self.reference_ink_share,
                  "questioned_ink_share": self.questioned_ink_share,
                  "reference_stroke_ratio": self.reference_stroke_ratio,
                  "questioned_stroke_ratio": self.questioned_stroke_ratio}
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


def ink_mask(image: np.ndarray, reach: int = 0) -> np.ndarray:
    """Ink pixels of a preprocessed image (ink bright on black): Otsu's threshold, so a non-binarised
    image works too; with ``reach`` > 0, also the pixels within that many pixels of a stroke. A blank
    image has no ink."""
    if image.max() == image.min():
        return np.zeros(image.shape, bool)
    level, _ = cv2.threshold(np.ascontiguousarray(image, np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = image > level
    if reach > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        ink = cv2.dilate(ink.astype(np.uint8), kernel).astype(bool)
    return ink


def ink_ratio(attribution: np.ndarray, ink: np.ndarray) -> float:
    """Share of the positive attribution on ink pixels: 1 when it is all on ink, 0 when all on
    background; NaN when there is no positive attribution at all."""
    if attribution.shape != ink.shape:
        raise ValueError(f"attribution {attribution.shape} and ink mask {ink.shape} differ in size")
    positive = np.clip(np.nan_to_num(attribution.astype(np.float64)), 0, None)
    total = positive.sum()
    return float(positive[ink].sum() / total) if total > 0 else float("nan")


def feature_stages(network: nn.Module) -> list[tuple[str, int]]:
    """(module name within ``network``, reduction) of each feature stage of the embedder's backbone."""
    backbone = network.backbone
    base, prefix = (backbone.trunk, "backbone.trunk.") if hasattr(backbone, "trunk") else (backbone, "backbone.")
    info = base.feature_info
    stages = []
    for entry in (info.get_dicts() if hasattr(info, "get_dicts") else info):
        name = entry["module"]
        for candidate in (name, name.replace(".", "_")):  # features_only models flatten dotted names
            try:
                base.get_submodule(candidate)
            except AttributeError:
                continue
            stages.append((prefix + candidate, int(entry["reduction"])))
            break
    return stages


def default_layer(network: nn.Module, height: int) -> str:
    """The deepest stage whose map keeps ``MIN_MAP_HEIGHT`` rows at this input height (else the first)."""
    stages = feature_stages(network)
    if not stages:
        raise ValueError(f"{type(network.backbone).__name__}: no feature stages found; name a layer with --layer")
    fine = [name for name, reduction in stages if height // reduction >= MIN_MAP_HEIGHT]
    return fine[-1] if fine else stages[0][0]


class SimilarityTarget:
    """Grad-CAM's target for one image: the cosine similarity of its (unit) embedding to a fixed one."""

    def __init__(self, embedding: torch.Tensor):
        self.embedding = embedding

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output * self.embedding.to(output.device)).sum()


def _cam(method: str, network: nn.Module, layer: nn.Module):
    from pytorch_grad_cam import EigenGradCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM

    kinds = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "hirescam": HiResCAM,
             "layercam": LayerCAM, "eigengradcam": EigenGradCAM}
    return kinds[method](model=network, target_layers=[layer])


class Explainer:
    """Maps of similarities for one embedding network (kept in eval mode; its weights are not changed)."""

    def __init__(self, network: nn.Module, height: int, method: str = "gradcam", layer: str | None = None):
        self.network = network.eval()
        self.layer_name = layer or default_layer(network, height)
        try:
            layer_module = network.get_submodule(self.layer_name)
        except AttributeError:
            names = ", ".join(name for name, _ in feature_stages(network))
            raise ValueError(f"no layer {self.layer_name!r} in the network; its stages: {names}") from None
        if method not in METHODS:
            raise ValueError(f"unknown explanation method {method!r}; valid: {', '.join(METHODS)}")
        self.method, self.layer = method, layer_module
        reduction = dict(feature_stages(network)).get(self.layer_name, 1)
        self.reach = reduction // 2  # half a map cell, in input pixels

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        device = next(self.network.parameters()).device  # a GPU model (sigverify test on a GPU) stays there
        return torch.from_numpy(np.ascontiguousarray(images, np.float32)[:, None] / 255.0).to(device)

    def embed(self, images: np.ndarray, batch_size: int = 128) -> torch.Tensor:
        """Unit embeddings [N, D] on the CPU."""
        with torch.no_grad():
            return torch.cat([self.network(self._tensor(images[i:i + batch_size])).float().cpu()
                              for i in range(0, len(images), batch_size)])

    def maps(self, images: np.ndarray, targets: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """[N, H, W] maps of each image's similarity to its row of ``targets`` (fixed unit embeddings)."""
        out = []
        parameters = list(self.network.parameters())
        trainable = [p.requires_grad for p in parameters]
        # Gradients reach the activations through the input, not the weights: frozen stages work, and no
        # .grad is left on the model. The CAM's hooks live only for this call. (Not its context manager:
        # its __exit__ swallows IndexErrors, which would silently drop maps.)
        cam = _cam(self.method, self.network, self.layer)
        try:
            with torch.inference_mode(False), torch.enable_grad():  # Lightning's test loop runs in inference mode
                for p in parameters:
                    p.requires_grad_(False)
                for start in range(0, len(images), batch_size):
                    chunk = self._tensor(images[start:start + batch_size]).requires_grad_(True)
                    concepts = [SimilarityTarget(t.detach().clone()) for t in targets[start:start + batch_size]]
                    out.append(cam(input_tensor=chunk, targets=concepts))
        finally:
            cam.activations_and_grads.release()
            for p, flag in zip(parameters, trainable):
                p.requires_grad_(flag)
        return np.nan_to_num(np.concatenate(out).astype(np.float32)) if out else np.zeros((0, *images.shape[1:]), np.float32)

    def ink(self, image: np.ndarray) -> np.ndarray:
        return ink_mask(image, self.reach)

    def pairs(self, references: np.ndarray, questioned: np.ndarray) -> list[PairMaps]:
        """Both maps of each (reference, questioned) pair, with their similarity and ink ratios."""
        ref_emb, q_emb = self.embed(references), self.embed(questioned)
        ref_maps, q_maps = self.maps(references, q_emb), self.maps(questioned, ref_emb)
        similarity = (ref_emb * q_emb).sum(1).tolist()
        out = []
        for s, rm, qm, r, q in zip(similarity, ref_maps, q_maps, references, questioned):
            r_ink, q_ink = self.ink(r), self.ink(q)
            out.append(PairMaps(s, rm, qm, ink_ratio(rm, r_ink), ink_ratio(qm, q_ink), float(r_ink.mean()),
                                float(q_ink.mean()), ink_ratio(rm, ink_mask(r)), ink_ratio(qm, ink_mask(q))))
        return out

    def describe(self) -> dict:
        return {"method": self.method, "layer": self.layer_name, "ink_reach_px": self.reach}
