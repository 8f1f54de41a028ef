"""Verification with an exported model on onnxruntime: preprocess, embed, score, decide. No torch.

The score of a questioned signature against a signer's references is computed by the function
``sigverify test`` uses (:func:`sigverify.evaluation.protocols.score_against_references` under the
``references`` protocol), so the threshold measured on the validation signers is the one that applies.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sigverify.data.errors import DataError
from sigverify.data.images import check_max_pixels, decode_grayscale
from sigverify.data.preprocess import preprocess_array
from sigverify.evaluation.protocols import cosine, score_against_references
from sigverify.serving.model_dir import Calibration, ModelDir, read_model_dir


@dataclass(frozen=True)
class DecodedImage:
    """One image as received: its name, the SHA-256 of its bytes, its format, and (when the image itself is at
    hand, not only its stored embedding) the decoded page and the model's view of it."""

    name: str
    sha256: str
    format: str | None = None
    page: np.ndarray | None = None
    model_view: np.ndarray | None = None


@dataclass(frozen=True)
class Verdict:
    similarities: list[float]  # cosine similarity of the questioned signature to each reference
    score: float  # the protocol's aggregate score, compared with the threshold
    distance: float  # cosine distance to the references: 1 - mean similarity
    threshold: float
    genuine: bool
    confidence: float
    far_at_score: float  # validation skilled forgeries scoring at or above this score
    frr_at_score: float  # validation genuine signatures scoring below this score
    n_references: int
    n_references_validated: int  # the threshold and the rates hold for this many references
    evidence: dict | None = None  # the likelihood ratio (likelihood_ratio.LRCalibration.evidence), if the model has one

    @property
    def calibrated(self) -> bool:
        return self.n_references == self.n_references_validated

    def to_json(self) -> dict:
        return {"decision": "genuine" if self.genuine else "forgery", "score": self.score,
                "distance": self.distance, "threshold": self.threshold, "confidence": self.confidence,
                "similarities": self.similarities, "far_at_score": self.far_at_score,
                "frr_at_score": self.frr_at_score, "n_references": self.n_references,
                "n_references_validated": self.n_references_validated, "calibrated": self.calibrated,
                "likelihood_ratio": self.likelihood_ratio_json()}

    def likelihood_ratio_json(self) -> dict | None:
        """The LR with what qualifies it: calibrated only for the validated reference count."""
        if self.evidence is None:
            return None
        notes = [] if self.calibrated else [f"uncalibrated: the LR calibration holds for {self.n_references_validated} "
                                            f"references, not {self.n_references}"]
        return {**self.evidence, "calibrated": self.calibrated, "note": "; ".join(notes + self.range_notes()) or None}

    def range_notes(self) -> list[str]:
        """What qualifies the LR's value itself: capped at a bound, or extrapolated beyond the validation scores."""
        if self.evidence is None:
            return []
        notes = []
        if self.evidence["at_bound"]:
            notes.append("at the bound of what the validation data support: the evidence may be stronger, not weaker")
        if self.evidence["beyond_validation_scores"]:
            notes.append("the score lies beyond every validation score: the LR there is extrapolated by the fit")
        return notes


def likelihood_ratio_evidence(calibration: Calibration, score: float) -> dict | None:
    """The LR of a score under the folder's calibration, and whether the score lies beyond every validation
    score; None for a folder exported before LRs were."""
    lr = calibration.likelihood_ratio
    return None if lr is None else {**lr.evidence(score), "beyond_validation_scores": calibration.beyond(score)}


IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")  # sniffed from the content, never the name
MAX_PIXELS = 20_000_000  # per image: a signature crop at 600 dpi is a few Mpx; an A4 page at 300 dpi about 9


class Verifier:
    """An exported model ready to verify. ``threads`` caps onnxruntime's intra-op threads (default: all cores);
    ``max_pixels`` bounds every image it decodes."""

    def __init__(self, model: ModelDir | str | Path, threads: int | None = None, max_pixels: int = MAX_PIXELS):
        import onnxruntime as ort  # the serving extra; imported here so reading a model folder does not need it

        self.model = model if isinstance(model, ModelDir) else read_model_dir(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3  # onnxruntime's warnings are about its own graph optimisations
        # No busy-waiting between runs: in a server the spinning threads would take the cores from the
        # request handling and the database.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.model.onnx_path), options, providers=["CPUExecutionProvider"])
        self.preprocess_config = self.model.config.preprocess
        self.max_pixels = check_max_pixels(max_pixels)
        protocol = self.model.config.protocol
        self.protocol, self.reduce, self.normalize = protocol.name, protocol.reduce, protocol.normalize

    @property
    def min_references(self) -> int:
        """Writer normalisation needs the references' similarities to each other: at least 2 of them."""
        return 2 if self.protocol == "references" and self.normalize != "none" else 1

    @property
    def max_references(self) -> int | None:
        """The pairs protocol's threshold holds for one reference-questioned pair, not for a mean of several."""
        return 1 if self.protocol == "pairs" else None

    @property
    def validated_references(self) -> int:
        """How many references each validation signer had when the threshold was chosen."""
        return self.model.config.protocol.n_references_validated

    # -- images -> embeddings ----------------------------------------------------------------------
    def decode(self, data: bytes, name: str) -> tuple[np.ndarray, str]:
        """The one decode policy of every front door (``sigverify verify``, the service, the app): the format
        sniffed from the content (``IMAGE_FORMATS``), the EXIF orientation applied, one frame, at most
        ``max_pixels``. Returns the grayscale page and the format found; errors name ``name``."""
        return decode_grayscale(data, name, self.max_pixels, IMAGE_FORMATS)

    def preprocess(self, gray: np.ndarray, name: str) -> np.ndarray:
        """A decoded grayscale page (uint8, dark ink on light paper) as the model sees it."""
        try:
            return preprocess_array(gray, self.preprocess_config)
        except ValueError as err:  # a blank page
            raise DataError(name, str(err)) from err

    def read(self, data: bytes, name: str) -> DecodedImage:
        """Bytes received (an upload, a file) decoded and preprocessed by the front doors' policy."""
        page, found = self.decode(data, name)
        return DecodedImage(name, hashlib.sha256(data).hexdigest(), found, page, self.preprocess(page, name))

    def preprocess_files(self, paths) -> np.ndarray:
        """Image files, decoded by the front doors' policy and preprocessed."""
        return np.stack([self.preprocess(self.decode(read_image_file(p), str(p))[0], str(p)) for p in paths])

    def embed(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Preprocessed uint8 images [N, H, W] -> unit-length embeddings [N, D] (float32)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        chunks = [self.session.run(None, {"images": images[i:i + batch_size, None]})[0]
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.model.config.embedding_dim), np.float32)

    # -- embeddings -> verdict ---------------------------------------------------------------------
    def score(self, questioned: np.ndarray, references: np.ndarray) -> float:
        """The protocol's score of one questioned embedding [D] against a signer's references [R, D]."""
        questioned, references = np.atleast_2d(questioned), np.atleast_2d(references)
        self.check_reference_count(len(references))
        if self.protocol == "references":
            return float(score_against_references(questioned, references, self.reduce, self.normalize)[0])
        return float(cosine(questioned, references)[0, 0])  # pairs: one pair, scored as `sigverify test` scores it

    def check_reference_count(self, n: int) -> None:
        if n < self.min_references:
            raise ValueError(f"this model scores against at least {self.min_references} references, got {n}")
        if self.max_references is not None and n > self.max_references:
            raise ValueError(f"this model was exported for the pairs protocol: its threshold holds for one reference, "
                             f"got {n} (export with --protocol references to verify against several)")

    def verdict(self, questioned: np.ndarray, references: np.ndarray) -> Verdict:
        similarities = cosine(np.atleast_2d(questioned).astype(np.float64), np.atleast_2d(references).astype(np.float64))[0]
        score = self.score(np.asarray(questioned, np.float64), np.asarray(references, np.float64))
        threshold, calibration = self.model.threshold, self.model.calibration
        far, frr = calibration.far_at(score), calibration.frr_at(score)
        genuine = score >= threshold
        # Confidence: the share of validation signatures of the other class that this score is on the far
        # side of. Accepted: forgeries that score lower (1 - FAR here); rejected: genuine that score higher.
        confidence = 1.0 - far if genuine else 1.0 - frr
        return Verdict([float(s) for s in similarities], score, float(1.0 - similarities.mean()), threshold,
                       bool(genuine), float(confidence), far, frr, len(similarities), self.validated_references,
                       likelihood_ratio_evidence(calibration, score))

    def verify_files(self, references, questioned) -> Verdict:
        images = self.preprocess_files([*references, questioned])
        embeddings = self.embed(images)
        return self.verdict(embeddings[-1], embeddings[:-1])


def read_image_file(path) -> bytes:
    """An image file's bytes, or a DataError naming it."""
    file = Path(path)
    if not file.is_file():
        raise DataError(file, "file not found")
    return file.read_bytes()
