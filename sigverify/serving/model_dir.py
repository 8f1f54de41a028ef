"""The exported model folder: the one model format that ``verify``, ``serve`` and later tools read.

Laid out as the Hugging Face hub expects a model repository, plus what verification needs::

    MODEL_DIR/
      config.json         architecture, input, preprocessing, scoring protocol, operating threshold,
                          training config (and its hash), the split's signers, ONNX parity
      model.safetensors   the embedding network's weights (PyTorch, for fine-tuning or re-export)
      start.safetensors   only with features backbone_and_untrained: the weights the network started from,
                          whose features are scored beside the trained ones (the folder needs nothing else)
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
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from sigverify.data.preprocess import PreprocessConfig
from sigverify.evaluation.likelihood_ratio import LRCalibration
from sigverify.evaluation.protocols import Normalization, Protocol, Reduction
from sigverify.models.inference import Features

# 2: the scored features have their own entry ("features"; format 1 kept them in "evaluation"). Raised so that a
# sigverify that reads only format 1 says "model format 2" instead of misreading or naming an unknown entry.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
CONFIG, WEIGHTS, ONNX, CALIBRATION, CARD = "config.json", "model.safetensors", "model.onnx", "calibration.json", "README.md"
START = "start.safetensors"


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
class ScoringProtocol:
    """How a questioned signature is scored against the references the threshold was chosen for."""

    name: Protocol
    reduce: Reduction  # the references protocol's reduction of the similarities
    normalize: Normalization  # the references protocol's writer normalisation
    n_references_validated: int  # references per validation signer when the threshold was chosen


@dataclass(frozen=True)
class OperatingThreshold:
    """The threshold and its error rates on the validation signers it was chosen on."""

    value: float
    source: str
    far_skilled: float
    frr: float
    far_random: float | None
    hter: float
    n_validation_signers: int
    n_genuine_scores: int
    n_skilled_scores: int


@dataclass(frozen=True)
class OnnxCheck:
    """How closely ``model.onnx`` was checked to follow the PyTorch network."""

    opset: int
    max_abs_difference_to_pytorch: float
    tolerance: float
    checked_on: str


@dataclass(frozen=True)
class CheckpointOrigin:
    file: str
    epoch: int | None
    global_step: int | None


@dataclass(frozen=True)
class ModelConfig:
    """``config.json``: written by ``sigverify export`` and read back by everything else, only through
    :meth:`to_json` and :meth:`from_json`. The free-form parts (the training config, the split, the test
    figures) are kept as JSON objects: they are quoted, not computed with."""

    backbone: str
    embedding_dim: int  # of the scoring network's output: the embedding's, or more (features both, backbone...)
    head_hidden: tuple[int, ...]
    preprocess: PreprocessConfig
    protocol: ScoringProtocol
    threshold: OperatingThreshold
    onnx: OnnxCheck
    checkpoint: CheckpointOrigin
    training_config: dict  # {"model": the module's hyperparameters, "data": the data settings}
    training_config_sha256: str
    split: dict  # the signers of each part and the data set's fingerprint
    # the evaluation settings the threshold was chosen under (EvalConfig as JSON); {} in folders exported before
    evaluation: dict = field(default_factory=dict)
    neck: str = "plain"
    features: Features = "embedding"  # which of the network's outputs is scored (models/inference.py's FEATURES)
    tta_shift: float = 0.0
    starting_weights: dict | None = None  # None: exported before they were recorded
    scripts: str | None = None
    test_figures: dict | None = None  # the run's test report under this protocol, when it had one
    sigverify_version: str = ""
    format_version: int = FORMAT_VERSION
    library_name: str = "sigverify"
    architecture: str = "SignatureEmbedder"

    def onnx_signature(self) -> dict:
        """The graph's input and output, for readers that do not know sigverify (derived, never read back)."""
        pre = self.preprocess
        return {"input": {"name": "images", "dtype": "uint8", "shape": ["batch", 1, pre.height, pre.width],
                          "ink": "bright (255) on black (0), after the preprocessing below"},
                "output": {"name": "embeddings", "dtype": "float32", "shape": ["batch", self.embedding_dim],
                           "norm": "unit length; compare with the cosine similarity"}}

    def to_json(self) -> dict:
        return {**asdict(self), "head_hidden": list(self.head_hidden), **self.onnx_signature()}

    @classmethod
    def from_json(cls, data: dict, file: Path) -> "ModelConfig":
        """Parse ``config.json``'s object; a missing, unknown or mistyped entry is a ModelDirError naming the file."""
        data = {k: v for k, v in data.items() if k not in ("input", "output")}  # derived from the rest
        if data.get("format_version") == 1 and isinstance(data.get("evaluation"), dict):
            # Format 1 (before the inference settings left the evaluation ones, issue #25) kept them there.
            evaluation = dict(data["evaluation"])
            data.setdefault("features", evaluation.pop("features", "embedding"))
            data["evaluation"] = evaluation
        parts = {"preprocess": PreprocessConfig, "protocol": ScoringProtocol, "threshold": OperatingThreshold,
                 "onnx": OnnxCheck, "checkpoint": CheckpointOrigin}
        values = _fields_of(cls, data, file, "")
        for key, part in parts.items():
            values[key] = _build(part, _fields_of(part, values[key], file, f"{key}."), file, key)
        values["head_hidden"] = tuple(values["head_hidden"])
        return _build(cls, values, file, "config")


def _fields_of(cls, value, file: Path, where: str) -> dict:
    """``value``'s entries, checked against the fields of ``cls``: an object, every required field present,
    nothing unknown (a setting this sigverify does not know would be silently ignored)."""
    if not isinstance(value, dict):
        raise ModelDirError(f"{file}: {where.rstrip('.') or 'the file'} is not a JSON object")
    known = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    if missing := sorted(required - value.keys()):
        raise ModelDirError(f"{file}: no {', '.join(where + m for m in missing)} entry; re-export the model")
    if unknown := sorted(value.keys() - known):
        raise ModelDirError(f"{file}: unknown entries {', '.join(where + u for u in unknown)} (exported by another "
                            "sigverify version?)")
    hints = typing.get_type_hints(cls)
    for key, entry in value.items():
        if not _is_a(entry, hints[key]):
            raise ModelDirError(f"{file}: {where}{key} is {entry!r}, not {_describe(hints[key])}")
    return dict(value)


def _is_a(value, hint) -> bool:
    """Whether a JSON value fits a field's type: the types config.json's fields use (numbers, strings, Literal
    choices, objects, lists of ints, optional ones); a nested part is an object, checked field by field later."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):  # JSON writes 1.0 as 1; a bool is no number
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    if origin is tuple:  # tuple[int, ...]: a JSON list
        return isinstance(value, (list, tuple)) and all(_is_a(v, args[0]) for v in value)
    if hint in (str, dict):
        return isinstance(value, hint)
    return isinstance(value, dict)  # a nested part


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, args))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "an object"}
    return names.get(hint, "an object")


def _build(cls, values: dict, file: Path, where: str):
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # the part's own checks (PreprocessConfig validates its settings)
        raise ModelDirError(f"{file}: {where}: {err}") from err


@dataclass(frozen=True)
class ModelDir:
    path: Path
    config: ModelConfig
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
        return self.config.threshold.value


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
    if version not in READABLE_FORMATS:
        raise ModelDirError(f"{folder / CONFIG}: model format {version!r}, this sigverify reads formats "
                            f"{', '.join(map(str, READABLE_FORMATS))} (re-export the model, or update sigverify)")
    config = ModelConfig.from_json(config, folder / CONFIG)
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
