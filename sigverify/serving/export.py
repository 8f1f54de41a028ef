"""``sigverify export --ckpt CKPT_OR_RUN --out MODEL_DIR``: a trained checkpoint as a self-contained model folder
(layout in ``model_dir.py``).

The operating threshold is chosen on the checkpoint's own validation signers under the scoring protocol
the folder will serve (as ``sigverify test`` chooses it), and their scores are kept for the confidence of
every later decision. The ONNX graph is checked against PyTorch on those real preprocessed images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

import sigverify
from sigverify.data.datamodule import SignatureDataModule
from sigverify.data.splits import same_validation_signers
from sigverify.evaluation.metrics import rates_at
from sigverify.evaluation.protocols import Scores
from sigverify.evaluation.report import EvalConfig, carried_threshold, choose_threshold, protocol_scores
from sigverify.models.checkpoint import TrainedCheckpoint, weights_sha256
from sigverify.models.embedding import embed_images, untrained_embedder
from sigverify.models.inference import WITH_UNTRAINED, InferenceConfig
from sigverify.models.packaged_weights import starting_weights
from sigverify.serving.model_card import model_card
from sigverify.serving.model_dir import (
    CALIBRATION,
    CARD,
    CONFIG,
    ONNX,
    START,
    WEIGHTS,
    Calibration,
    CheckpointOrigin,
    ModelConfig,
    OnnxCheck,
    OperatingThreshold,
    ScoringProtocol,
)

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-4  # max |ONNX - PyTorch| per embedding coordinate on real images
ONNX_OPSET = 17  # the opset the graph is exported with, recorded in the folder's config


def evaluation_config(checkpoint: TrainedCheckpoint, report: dict | None, protocol: str,
                      n_references: int | None) -> EvalConfig:
    """The evaluation settings the threshold is chosen under: those of the run's own test report under this
    protocol when there is one (``sigverify test`` takes them from its command line, which may differ from
    the training run's), else the checkpoint's; ``n_references`` overrides the count."""
    stored = dict(report["config"] if report and isinstance(report.get("config"), dict) else checkpoint.evaluation)
    names = {f.name for f in fields(EvalConfig)}
    stored = {k: v for k, v in stored.items() if k in names}
    if n_references is not None and n_references < 2:
        raise ValueError(f"--n-references must be at least 2, got {n_references}")
    return EvalConfig(**{**stored, "protocol": protocol, "also_protocols": [],
                         "n_references": n_references or stored.get("n_references", EvalConfig.n_references)})


def inference_config(checkpoint: TrainedCheckpoint, report: dict | None) -> InferenceConfig:
    """How the exported network embeds: as in the run's own test report when there is one, else as the checkpoint
    was set to (an ensemble is refused when the network is read: export writes one)."""
    if not (report and isinstance(report.get("config"), dict)):
        return checkpoint.inference
    stored = {**report["config"], **report.get("inference", {})}  # reports before issue #25 kept them in "config"
    return InferenceConfig(**{f.name: stored[f.name] for f in fields(InferenceConfig) if f.name in stored})


def export_onnx(network: torch.nn.Module, height: int, width: int, file: Path) -> None:
    example = torch.zeros(2, 1, height, width, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant shapes: the input size is fixed
        torch.onnx.export(network, (example,), str(file), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=ONNX_OPSET,
                          dynamo=False)
    network.eval()  # the exporter restores the training flag of the outermost module on every submodule


def onnx_embed(file: Path, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": np.ascontiguousarray(images[i:i + batch_size, None])})[0]
                           for i in range(0, len(images), batch_size)])


def config_hash(training: dict) -> str:
    return hashlib.sha256(json.dumps(training, sort_keys=True, default=str).encode()).hexdigest()


def _plain(value):
    """Settings as JSON (dataclasses, tuples and paths included)."""
    return json.loads(json.dumps(value, default=lambda v: asdict(v) if hasattr(v, "__dataclass_fields__") else str(v)))


def export(ckpt: str | Path, out: str | Path, protocol: str | None = None, data: str | None = None,
           overwrite: bool = False, n_references: int | None = None, scripts: str | None = None) -> Path:
    """Write the model folder; returns its path. Nothing is left at ``out`` if any step fails. ``ckpt`` is a
    checkpoint file or a run folder (its best checkpoint)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    checkpoint = TrainedCheckpoint.read(ckpt, "checkpoint to export")
    protocol = protocol or "references"
    report = _test_report(checkpoint.path, protocol)
    config = evaluation_config(checkpoint, report, protocol, n_references)
    inference = inference_config(checkpoint, report)
    network = checkpoint.network(inference)
    if config.threshold_from:  # a carried threshold of another network, or one that embedded otherwise: before any work
        carried_threshold(config, model_sha256=weights_sha256(checkpoint.embedder_weights()), inference=asdict(inference))
    validation = score_validation(checkpoint, network, config, data, references_chosen=n_references is not None)
    config, threshold = validation.config, validation.threshold.value  # the reference count may have changed
    if report is not None and report.get("threshold") != threshold:
        log.warning("the run's test report under %s used another threshold (%s, not %s): left out of the model "
                    "card (another checkpoint or other evaluation settings)", protocol, report.get("threshold"), threshold)
        report = None

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))  # same file system: the rename is atomic
    try:
        preprocess = validation.datamodule.preprocess
        export_onnx(network, preprocess.height, preprocess.width, staging / ONNX)
        onnx_check = checked_onnx(staging / ONNX, validation)
        write_weights(staging, checkpoint, inference)
        model_config = folder_config(checkpoint, inference, validation, onnx_check, report, scripts)
        (staging / CONFIG).write_text(json.dumps(model_config.to_json(), indent=1))
        # The LR calibration: fitted on the same validation scores, under this protocol and reference count.
        likelihood_ratio = config.lr_calibration(validation.scores)
        calibration = Calibration.from_scores(validation.scores.genuine, validation.scores.skilled, likelihood_ratio)
        (staging / CALIBRATION).write_text(json.dumps(calibration.to_json()))
        model_card(model_config, report, likelihood_ratio).save(staging / CARD)
        readable_by_others(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s to %s (threshold %.4f under the %s protocol, ONNX within %.1e)", checkpoint.path, out,
             threshold, config.protocol, onnx_check.max_abs_difference_to_pytorch)
    return out


@dataclass(frozen=True, eq=False)
class ValidationScoring:
    """The checkpoint's validation signers scored as the folder will score them: the operating threshold, and
    the images the ONNX graph is checked on."""

    datamodule: SignatureDataModule
    images: np.ndarray
    embeddings: np.ndarray
    scores: Scores
    config: EvalConfig  # with the reference count the threshold was chosen for
    threshold: OperatingThreshold


def score_validation(checkpoint: TrainedCheckpoint, network: torch.nn.Module, config: EvalConfig, data: str | None,
                     references_chosen: bool) -> ValidationScoring:
    """Score the validation signers the checkpoint was trained beside and fix the threshold on them.

    Refused when the data given is not the data it trained with (a threshold fixed on other signers, perhaps
    ones it trained on, would be no validation threshold) or when its split has no validation signers.
    ``references_chosen``: whether the user asked for the reference count, which then may not be lowered to
    what the validation signers can enrol."""
    datamodule = checkpoint.datamodule(data)
    datamodule.setup("validate")
    record = checkpoint.split
    if record is not None and not same_validation_signers(record, datamodule.split_record()):
        raise ValueError(f"{checkpoint.path}: the data rebuilt from it (data set fingerprint, validation signers) "
                         "is not what it trained with; pass --data to point at its data")
    positions = datamodule.positions("val")
    if not len(positions):
        raise ValueError(f"{checkpoint.path}: its split has no validation signers to fix the threshold on")
    if config.protocol == "references":
        config = replace(config, n_references=supported_references(datamodule, positions, config.n_references,
                                                                   chosen=references_chosen))
    images = np.asarray(datamodule.images[positions])
    embeddings = embed_images(network, images)
    scores = protocol_scores(embeddings, datamodule.signer_ids[positions], datamodule.genuine[positions], config)
    value, source = choose_threshold(scores, config)
    rates = rates_at(value, scores.genuine, scores.skilled, scores.random)
    threshold = OperatingThreshold(
        float(value), source, rates["far_skilled"], rates["frr"], rates["far_random"], rates["hter"],
        n_validation_signers=len(datamodule.split["val"]), n_genuine_scores=int(len(scores.genuine)),
        n_skilled_scores=int(len(scores.skilled)))
    return ValidationScoring(datamodule, images, embeddings, scores, config, threshold)


def checked_onnx(file: Path, validation: ValidationScoring) -> OnnxCheck:
    """The exported graph against PyTorch on the validation images; refused beyond the tolerance."""
    difference = float(np.abs(onnx_embed(file, validation.images) - validation.embeddings).max())
    if difference > ONNX_TOLERANCE:
        raise RuntimeError(f"the ONNX graph differs from PyTorch by {difference:.2e} on the validation "
                           f"images (tolerance {ONNX_TOLERANCE:g}); not exported")
    return OnnxCheck(ONNX_OPSET, difference, ONNX_TOLERANCE, f"{len(validation.images)} preprocessed validation images")


def write_weights(folder: Path, checkpoint: TrainedCheckpoint, inference: InferenceConfig) -> None:
    """The embedding network's own weights: from_pretrained rebuilds what scores with them (shifts, features),
    and those it started from where they are scored too, so the folder needs neither package nor file to read."""
    from safetensors.torch import save_file

    save_file(contiguous(checkpoint.embedder().state_dict()), str(folder / WEIGHTS))
    if inference.features == WITH_UNTRAINED:  # rebuilt from the same weights as the one the ONNX graph holds
        save_file(contiguous(untrained_embedder(checkpoint.hparams).state_dict()), str(folder / START))


def folder_config(checkpoint: TrainedCheckpoint, inference: InferenceConfig, validation: ValidationScoring,
                  onnx_check: OnnxCheck, report: dict | None, scripts: str | None) -> ModelConfig:
    """The folder's ``config.json``: the network, how it scores, its threshold, and where it came from."""
    hparams, datamodule, config = checkpoint.hparams, validation.datamodule, validation.config
    training = {"model": _plain(hparams), "data": _plain(checkpoint.data_settings)}
    return ModelConfig(
        sigverify_version=sigverify.__version__,
        backbone=hparams["backbone"],
        neck=hparams.get("neck", "plain"),
        embedding_dim=int(validation.embeddings.shape[1]),
        head_hidden=tuple(hparams["head_hidden"]),
        features=inference.features,
        tta_shift=inference.tta_shift,
        evaluation=_plain(config),
        preprocess=datamodule.preprocess,
        protocol=ScoringProtocol(config.protocol, config.reduce, config.normalize,
                                 config.n_references if config.protocol == "references" else 1),
        threshold=validation.threshold,
        onnx=onnx_check,
        checkpoint=CheckpointOrigin(checkpoint.path.name, checkpoint.contents.get("epoch"),
                                    checkpoint.contents.get("global_step")),
        starting_weights=starting_weights(hparams["backbone"], hparams.get("pretrained", False),
                                          hparams.get("weights_file"), hparams.get("init_from")),
        training_config=training,
        training_config_sha256=config_hash(training),
        scripts=scripts or (None if datamodule.root else "synthetic (generated Latin-like strokes)"),
        split=checkpoint.split or {**{k: list(v) for k, v in datamodule.split.items()}, "data": datamodule.data_fingerprint},
        test_figures=test_figures(report),
    )


def contiguous(state: dict) -> dict:
    """A state dict as safetensors writes it (contiguous tensors)."""
    return {name: value.contiguous() for name, value in state.items()}


def supported_references(datamodule, positions: np.ndarray, wanted: int, chosen: bool) -> int:
    """The reference count the threshold is chosen for: ``wanted``, or, unless the user ``chosen`` it, as
    many as every validation signer can enrol while keeping one genuine signature to question."""
    signers, genuine = datamodule.signer_ids[positions], datamodule.genuine[positions]
    fewest = min(int(np.count_nonzero(genuine[signers == s])) for s in np.unique(signers))
    supported = fewest - 1
    if wanted <= supported:
        return wanted
    if chosen or supported < 2:
        raise ValueError(f"--n-references {wanted}: a validation signer has only {fewest} genuine signature(s), and "
                         f"the references protocol keeps one of them to question; at most {max(supported, 0)} "
                         "references can be validated on this data" + ("" if supported >= 2 else
                                                                      " (export with --protocol pairs instead)"))
    log.warning("the run was evaluated with %d references, but a validation signer has only %d genuine signatures: "
                "the threshold is chosen for %d references (--n-references sets another count); enrol as many",
                wanted, fewest, supported)
    return supported


def readable_by_others(folder: Path) -> None:
    """Folder and files as readable as the user's umask allows (the mkdtemp staging folder is owner-only):
    a service running as another user (the Docker image's) reads a model exported by this one."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def test_figures(report: dict | None) -> dict | None:
    """The figures of the run's test report that a case report quotes (None without a matching report)."""
    if report is None:
        return None
    keys = ("n_signers", "eer", "hter", "auc", "frr", "far_skilled", "far_random", "image_statistics_eer")
    lr = report.get("likelihood_ratio") or {}
    return {**{k: report.get(k) for k in keys},
            **{k: lr.get(k) for k in ("cllr", "cllr_min", "misleading_genuine", "misleading_forgery")}}


def _test_report(ckpt: Path, protocol: str) -> dict | None:
    """The run's test report under this protocol, if ``sigverify test`` wrote one beside the checkpoint."""
    report = ckpt.resolve().parent.parent / f"test-{protocol}" / "report.json"
    try:
        return json.loads(report.read_text()) if report.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
