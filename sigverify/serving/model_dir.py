"""The exported model folder: the one model format that ``verify``, ``serve`` and later tools read.

Laid out as the Hugging Face hub expects a model repository, plus what verification needs::

    MODEL_DIR/
      config.json         architecture, input, preprocessing, scoring protocol, operating threshold,
                          training config (and its hash), the split's signers, ONNX parity
      model.safetensors   the embedding network's weights (PyTorch, for fine-tuning or re-export)
      model.onnx          the same network for onnxruntime: uint8 images [B, 1, H, W] -> unit embeddings [B, D]
      calibration.json    the validation signers' genuine and skilled-forgery scores under the protocol,
                          from which the threshold was chosen and every confidence is read, and the
                          score-to-likelihood-ratio calibration fitted on them
      README.md           the model card

Reading it needs neither torch nor Lightning.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from sigverify.evaluation.likelihood_ratio import LRCalibration

FORMAT_VERSION = 1
CONFIG, WEIGHTS, ONNX, CALIBRATION, CARD = "config.json", "model.safetensors", "model.onnx", "calibration.json", "README.md"


class ModelDirError(ValueError):
    """A model folder that is missing, incomplete or of another format; the message names the file."""


@dataclass(frozen=True)
class Calibration:
    """Validation signers' scores under the model's protocol: where the threshold came from, and what
    a score means. Scores at or above the threshold are accepted as genuine."""

    genuine: np.ndarray  # sorted
    skilled: np.ndarray  # sorted
    likelihood_ratio: LRCalibration | None = None  # None in folders exported before LRs were

    def frr_at(self, score: float) -> float:
        """Share of validation genuine scores below ``score`` (rejected if this were the threshold)."""
        return float(np.searchsorted(self.genuine, score, side="left") / len(self.genuine))

    def far_at(self, score: float) -> float:
        """Share of validation skilled-forgery scores at or above ``score`` (accepted at this threshold)."""
        return float(1.0 - np.searchsorted(self.skilled, score, side="left") / len(self.skilled))

    def beyond(self, score: float) -> bool:
        """Whether ``score`` lies outside every validation score (where a fitted map only extrapolates)."""
        return bool(score < min(self.genuine[0], self.skilled[0]) or score > max(self.genuine[-1], self.skilled[-1]))

    def to_json(self) -> dict:
        # Full precision: the threshold is one of these scores, and rounding would move it across ties.
        scores = {"genuine": [float(v) for v in self.genuine], "skilled": [float(v) for v in self.skilled]}
        return {**scores, "likelihood_ratio": self.likelihood_ratio.to_json()} if self.likelihood_ratio else scores

    @classmethod
    def from_scores(cls, genuine, skilled, likelihood_ratio: LRCalibration | None = None) -> "Calibration":
        genuine, skilled = np.sort(np.asarray(genuine, float)), np.sort(np.asarray(skilled, float))
        if not len(genuine) or not len(skilled):
            raise ValueError("calibration needs genuine and skilled-forgery scores of validation signers")
        return cls(genuine, skilled, likelihood_ratio)


@dataclass(frozen=True)
class ModelDir:
    path: Path
    config: dict
    calibration: Calibration

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX

    @cached_property  # hashing the graph takes tens of ms: once per process, not per request
    def model_id(self) -> str:
        """Names the embedding space: the SHA-256 of the ONNX graph (its weights included), shortened."""
        digest = hashlib.sha256()
        with self.onnx_path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"]["value"])

    @property
    def protocol(self) -> dict:
        return self.config["protocol"]

    @property
    def preprocess(self) -> dict:
        return self.config["preprocess"]


def read_model_dir(path: str | Path) -> ModelDir:
    """Open an exported model folder; every problem is reported with the file it concerns."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelDirError(f"{folder}: not a model folder (make one with `sigverify export`)")
    for name in (CONFIG, ONNX, CALIBRATION):
        if not (folder / name).is_file():
            raise ModelDirError(f"{folder / name}: missing; re-export the model with `sigverify export`")
    config = _read_json(folder / CONFIG)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirError(f"{folder / CONFIG}: model format {version!r}, this sigverify reads {FORMAT_VERSION}")
    for key in ("preprocess", "protocol", "threshold", "input"):
        if key not in config:
            raise ModelDirError(f"{folder / CONFIG}: no {key!r} entry; re-export the model")
    scores = _read_json(folder / CALIBRATION)
    try:
        lr = scores.get("likelihood_ratio")
        calibration = Calibration.from_scores(scores["genuine"], scores["skilled"],
                                              LRCalibration.from_json(lr) if lr else None)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelDirError(f"{folder / CALIBRATION}: not a calibration file ({err})") from err
    return ModelDir(folder, config, calibration)


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelDirError(f"{file}: unreadable ({err})") from err
    if not isinstance(value, dict):
        raise ModelDirError(f"{file}: expected a JSON object")
    return value
