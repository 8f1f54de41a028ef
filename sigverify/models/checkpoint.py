"""The one reader of ``sigverify fit`` checkpoints: from a file or a run folder to the trained network, the
data it was trained on (settings and signer split) and the settings it was evaluated with.

Export, ensembles, explanation maps, initialisation from another run, the demo and the benchmarks all read
checkpoints here, with ``torch.load(weights_only=True)``: only tensors, plain containers and the project's
own config dataclasses (registered as safe in ``data/datamodule.py`` and here) are unpickled, never arbitrary code.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, is_dataclass, replace
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from sigverify.config import move_settings
from sigverify.data.augment import AugmentConfig
from sigverify.data.datamodule import SamplerConfig, SignatureDataModule, SyntheticConfig
from sigverify.data.manifest import DATASET_SEPARATOR, bare_signer, dataset_name
from sigverify.data.preprocess import PreprocessConfig
from sigverify.data.splits import SPLIT_KEY, SplitConfig, stored_val_from
from sigverify.models.embedding import SignatureEmbedder, embedder_from_hparams, scoring_network, untrained_embedder
from sigverify.models.inference import WITH_UNTRAINED, InferenceConfig
from sigverify.models.tta import ShiftAveraged

# A module built in Python (not through the CLI) stores its inference settings as the dataclass itself.
torch.serialization.add_safe_globals([InferenceConfig])

_DATAMODULE_PARTS = {"synthetic": SyntheticConfig, "preprocess": PreprocessConfig, "augment": AugmentConfig,
                     "split": SplitConfig, "sampler": SamplerConfig}


def run_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """A run's ``best`` or ``last`` checkpoint (the newest, in ``<run_dir>/checkpoints``, fit's folder)."""
    folder = Path(run_dir) / "checkpoints"
    found = sorted(folder.glob("last*.ckpt" if which == "last" else "best*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {which} checkpoint in {folder}; run `sigverify fit` with this config first")
    return found[-1]


@dataclass(frozen=True)
class TrainedCheckpoint:
    """A checkpoint of ``sigverify fit``, read once; ``contents`` is what torch.load returned."""

    path: Path
    contents: dict

    @classmethod
    def read(cls, source: str | Path, what: str = "checkpoint") -> "TrainedCheckpoint":
        """``source``: a checkpoint file, or a run folder (its best checkpoint). ``what`` names it in errors."""
        path = run_checkpoint(source) if Path(source).is_dir() else Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} not found")
        contents = torch.load(path, map_location="cpu", weights_only=True)
        if "backbone" not in (contents.get("hyper_parameters") or {}):
            raise ValueError(f"{path}: not a sigverify checkpoint (no model hyperparameters)")
        return cls(path, contents)

    @cached_property
    def hparams(self) -> dict:
        """The model's settings, as ``sigverify fit`` stored them, under today's names."""
        return current_hparams(self.contents["hyper_parameters"])

    @property
    def split(self) -> dict | None:
        """The signers the model saw (``None`` for checkpoints older than that record)."""
        return self.contents.get(SPLIT_KEY)

    @property
    def evaluation(self) -> dict:
        """The evaluation settings it was trained with, as a mapping."""
        return self.hparams.get("evaluation") or {}

    @property
    def inference(self) -> InferenceConfig:
        """How it was set to embed in validate/test (scored features, test-time shifts, ensemble members)."""
        return InferenceConfig(**self.hparams.get("inference") or {})

    @property
    def data_settings(self) -> dict:
        """The data module's settings, as ``sigverify fit`` stored them."""
        return {k: v for k, v in (self.contents.get("datamodule_hyper_parameters") or {}).items() if k != "_instantiator"}

    def embedder_weights(self) -> dict[str, torch.Tensor]:
        return {k.removeprefix("embedder."): v for k, v in self.contents["state_dict"].items()
                if k.startswith("embedder.")}

    def embedder(self) -> SignatureEmbedder:
        """The trained embedding network, in eval mode."""
        network = embedder_from_hparams(self.hparams, weights_from_checkpoint=True)
        network.load_state_dict(self.embedder_weights())
        return network.eval()

    def network(self, inference: InferenceConfig = InferenceConfig()) -> nn.Module:
        """The network ``sigverify test`` embeds with: the trained embedder (or what ``inference.features``
        scores), shift-averaged if tested so; one network (an ensemble's members are checkpoints of their own)."""
        if inference.ensemble:
            raise ValueError(f"{self.path}: set to be scored as an ensemble with {', '.join(inference.ensemble)} "
                             "(model.inference.ensemble); one network is read from one checkpoint: read (or export) "
                             "each member on its own, or test without the ensemble first")
        untrained = untrained_embedder(self.hparams) if inference.features == WITH_UNTRAINED else None
        network = scoring_network(self.embedder(), inference.features, untrained).eval()
        return ShiftAveraged(network, inference.tta_shift).eval() if inference.tta_shift else network

    def datamodule(self, root: str | None = None) -> SignatureDataModule:
        """The data module it trained with (data, preprocessing, signer split), set to read its validation and
        test signers; ``root`` replaces the data's location (a moved data set)."""
        stored = dict(self.data_settings)
        if not stored:
            raise ValueError(f"{self.path}: the checkpoint holds no data module settings; was it written by "
                             "`sigverify fit`?")
        if scheme := stored_val_from(stored.get("split")):  # the split it trained with, also from before val_from
            split = stored["split"]
            stored["split"] = {**(vars(split) if is_dataclass(split) else split), "val_from": scheme}
        for key, kind in _DATAMODULE_PARTS.items():
            if isinstance(stored.get(key), dict):
                names = {f.name for f in fields(kind)}
                stored[key] = kind(**{k: v for k, v in stored[key].items() if k in names})
        if root is not None:
            stored["root"] = root
        # Validation signers come from data.root alone; a training-only data set need not be at hand.
        extras, stored["train_extra"] = stored.get("train_extra"), []
        stored["num_workers"] = 0
        datamodule = SignatureDataModule(**stored)
        if extras and self.split and datamodule.split_config.mode in ("lists", "file"):
            # Listed ids carry data set prefixes (cedar:12) that data.root alone does not have.
            names = [dataset_name(path) for path in datamodule.manifest_paths()]
            datamodule.split_config = root_split(self.split, names, datamodule.split_config)
        return datamodule


def weights_sha256(embedder_state: dict[str, torch.Tensor]) -> str:
    """Names a network by its embedder's weights: a report's threshold belongs to it (``threshold_from`` refuses
    another's)."""
    digest = hashlib.sha256()
    for name, value in sorted(embedder_state.items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def current_hparams(stored: dict) -> dict:
    """A checkpoint's model hyperparameters as plain mappings under today's names: its settings moved since
    it was written (``config.MOVED_SETTINGS``) are where the model reads them now, and those that moved out of
    the model (the explanation maps: each command's own choice) are dropped."""
    # Copies, so that moving leaves the stored ones as read; vars(): a settings dataclass pickled before a field
    # moved still holds it (asdict would drop it).
    hparams = {k: dict(vars(v)) if is_dataclass(v) else dict(v) if isinstance(v, dict) else v
               for k, v in stored.items() if k != "_instantiator"}
    tree = {"model": hparams}
    move_settings(tree)
    return tree["model"]


def root_split(record: dict, names: list[str], config: SplitConfig) -> SplitConfig:
    """A checkpoint's split restricted to the data sets ``names`` as a listed split, with the ids those
    data sets have in a run without the training-only ones (bare when there is one)."""
    def kept(ids: list[str]) -> list[str]:
        ours = [s for s in ids if s.split(DATASET_SEPARATOR, 1)[0] in names]
        return [bare_signer(s) for s in ours] if len(names) == 1 else ours

    return replace(config, mode="lists", file=None, **{part: kept(record[part]) for part in ("train", "val", "test")})
