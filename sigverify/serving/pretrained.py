"""Share a model in one line: ``SignatureModel.from_pretrained(dir_or_repo_id)`` and ``save_pretrained``.

The folder is the one ``sigverify export`` writes (``model_dir.py``), read from a local path or from a
Hugging Face hub repository (through ``huggingface_hub``'s ``ModelHubMixin``; offline, from its local
cache). The network is rebuilt from the folder's training config and ``model.safetensors`` (and
``start.safetensors``, where the starting weights' features are scored too), so its embeddings are
bit-identical to those of the checkpoint it was exported from.

    model = SignatureModel.from_pretrained("user/signature-verifier")   # or a folder
    embeddings = model.embed_files(["ref.png", "questioned.png"])
    model.save_pretrained("copy")           # the same folder, byte for byte
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelHubMixin, snapshot_download
from torch import nn

from sigverify.data.preprocess import preprocess_file
from sigverify.models.embedding import (
    SignatureEmbedder,
    embed_images,
    embedder_from_hparams,
    scoring_network,
)
from sigverify.models.inference import WITH_UNTRAINED
from sigverify.models.tta import ShiftAveraged
from sigverify.serving.model_dir import (
    CALIBRATION,
    CARD,
    CONFIG,
    ONNX,
    START,
    WEIGHTS,
    ModelDir,
    ModelDirError,
    read_model_dir,
)

FILES = (CONFIG, WEIGHTS, ONNX, CALIBRATION, CARD)


def folder_files(model: ModelDir) -> tuple[str, ...]:
    """The files of an exported folder: every folder's, and the starting weights where they are scored."""
    return (*FILES, START) if model.config.features == WITH_UNTRAINED else FILES


class SignatureModel(nn.Module, ModelHubMixin, library_name="sigverify", pipeline_tag="image-feature-extraction",
                     tags=["signature-verification", "sigverify"], repo_url="https://github.com/sigverify/sigverify"):
    """An exported model in PyTorch: uint8 images [B, 1, H, W] (preprocessed) -> unit embeddings, with the
    folder's preprocessing, protocol, threshold and calibration."""

    def __init__(self, embedder: SignatureEmbedder, folder: ModelDir):
        super().__init__()
        self.embedder, self.folder = embedder.eval(), folder
        shift = folder.config.tta_shift
        scoring = scoring_network(self.embedder, folder.config.features, load_start(folder))
        self.network = ShiftAveraged(scoring, shift).eval() if shift else scoring.eval()
        self.preprocess_config = folder.config.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    @property
    def threshold(self) -> float:
        return self.folder.threshold

    def embed(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Embeddings of preprocessed uint8 images [N, H, W], as ``model.onnx`` computes them (on the
        model's device; returned on the CPU)."""
        return embed_images(self.network, images, batch_size)

    def embed_files(self, paths) -> np.ndarray:
        return self.embed(np.stack([preprocess_file(p, self.preprocess_config) for p in paths]))

    # -- ModelHubMixin ---------------------------------------------------------------------------
    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool,
                         local_files_only: bool, token, **kwargs) -> "SignatureModel":
        if os.path.isdir(model_id):
            folder = Path(model_id)
        else:
            folder = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                            force_download=force_download, local_files_only=local_files_only,
                                            token=token))
        model = read_model_dir(folder)
        return cls(load_embedder(model), model)

    def save_pretrained(self, save_directory, **kwargs):
        """Write the folder to ``save_directory`` (see :meth:`_save_pretrained`). Into the folder it was
        loaded from, there is nothing to write (the mixin would first delete its config.json)."""
        if Path(save_directory).resolve() == self.folder.path.resolve():
            self._check_unchanged()
            if kwargs.pop("push_to_hub", False):  # the mixin pushes from a copy it saves itself
                kwargs.pop("config", None), kwargs.pop("model_card_kwargs", None)
                return self.push_to_hub(kwargs.pop("repo_id", None) or self.folder.path.name, **kwargs)
            return None
        return super().save_pretrained(save_directory, **kwargs)

    def _check_unchanged(self) -> None:
        saved = load_embedder(self.folder).state_dict()
        for name, value in self.embedder.state_dict().items():
            if not torch.equal(value.cpu(), saved[name]):
                raise ValueError(f"the weights differ from {self.folder.path / WEIGHTS} ({name}); the threshold and "
                                 "calibration would be stale: train a checkpoint and `sigverify export` it instead")

    def _save_pretrained(self, save_directory: Path) -> None:
        """The folder's files as they are: its threshold and calibration belong to these weights, so
        weights changed since loading (fine-tuned) are refused rather than saved with a stale threshold."""
        self._check_unchanged()
        save_directory = Path(save_directory)
        for name in folder_files(self.folder):
            if (save_directory / name).resolve() != (self.folder.path / name).resolve():
                shutil.copyfile(self.folder.path / name, save_directory / name)


def load_embedder(model: ModelDir) -> SignatureEmbedder:
    """The embedding network of an exported folder (read by ``read_model_dir``): built from its training
    config, weights from ``model.safetensors``; every problem names the file."""
    return network_from_file(model, model.path / WEIGHTS)


def load_start(model: ModelDir) -> SignatureEmbedder | None:
    """The network the model started from, where its features are scored beside the trained ones
    (``backbone_and_untrained``; None otherwise): from the folder's ``start.safetensors``, so reading it needs
    neither the package nor the file its training took them from."""
    return network_from_file(model, model.path / START) if model.config.features == WITH_UNTRAINED else None


def network_from_file(model: ModelDir, weights: Path) -> SignatureEmbedder:
    """The folder's network (from its training config) with the weights of ``weights``; problems name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise ModelDirError(f"{weights}: missing; re-export the model with `sigverify export`")
    hparams = model.config.training_config.get("model")
    if not isinstance(hparams, dict):
        raise ModelDirError(f"{model.path / CONFIG}: no training_config.model entry; re-export the model")
    network = embedder_from_hparams(hparams, weights_from_checkpoint=True)
    try:
        network.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError, OSError) as err:  # unreadable, or of another network
        raise ModelDirError(f"{weights}: does not fit the network in {CONFIG} ({str(err)[:300]})") from err
    return network.eval()


def push_model_dir(folder: str | Path, repo: str, private: bool = False, revision: str | None = None,
                   token: str | None = None, message: str = "Upload signature verifier") -> str:
    """Upload an exported folder to a hub model repository (created if missing); returns the commit URL.
    The folder is checked first (it must load, weights included), so a broken model is never published."""
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError, HTTPError, OfflineModeIsEnabled

    model = read_model_dir(folder)
    load_embedder(model)
    load_start(model)
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=str(model.path), repo_id=repo, repo_type="model", revision=revision,
                                   commit_message=message, allow_patterns=list(folder_files(model)))
    except OfflineModeIsEnabled as err:
        raise OSError(f"the hub is not reachable here (HF_HUB_OFFLINE is set): {err}") from err
    except (HTTPError, HFValidationError) as err:  # the hub's answers and the HTTP client's network errors
        raise OSError(f"upload to {repo} failed: {type(err).__name__}: {err}") from err
    return str(getattr(commit, "commit_url", commit))
