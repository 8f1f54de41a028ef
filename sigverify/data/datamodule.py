"""The LightningDataModule: manifest (or built-in synthetic set) -> cache -> split -> loaders."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from sigverify.data.augment import AugmentConfig, build_train_transform
from sigverify.data.cache import default_cache_root, prepare
from sigverify.data.dataset import SignatureDataset, keep_batch, seed_worker_augmentation
from sigverify.data.manifest import (
    data_fingerprint,
    dataset_name,
    dataset_of,
    read_manifest,
    read_manifests,
    resolve_manifest,
    signer_order,
    signer_warnings,
)
from sigverify.data.preprocess import PreprocessConfig
from sigverify.data.sampler import PKFMBatchSampler, ResumableLoader
from sigverify.data.splits import SplitConfig, make_split, save_split, split_record
from sigverify.data.synth import SYNTHETIC_DEFAULTS, style_fingerprint, synthesize_dataset
from sigverify.evaluation.report import EvalConfig

log = logging.getLogger(__name__)


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class SyntheticConfig:
    """The built-in data set used when ``data.root`` is not given."""

    signers: int = SYNTHETIC_DEFAULTS["signers"]
    genuine: int = SYNTHETIC_DEFAULTS["genuine"]
    forgeries: int = SYNTHETIC_DEFAULTS["forgeries"]
    seed: int = 0
    style: str = "classic"  # classic | skilled (forgeries that follow the genuine trajectory; see synth.py)


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class SamplerConfig:
    """PKFM batches: P signers x (K genuine + F forgeries + M other signers' genuine)."""

    p: int = 8
    k: int = 2
    f: int = 2
    m: int = 2
    batches_per_epoch: int | None = None  # default: about one pass over the genuine samples


# The data module's settings are stored in checkpoints; Lightning reloads them with weights_only=True.
torch.serialization.add_safe_globals([SyntheticConfig, SamplerConfig, PreprocessConfig, AugmentConfig, SplitConfig, EvalConfig])


class SignatureDataModule(L.LightningDataModule):
    def __init__(
        self,
        root: str | list[str] | None = None,  # a manifest, or several (signers kept apart per data set)
        train_extra: list[str] | None = None,  # manifests whose signers all train (never validated or tested)
        synthetic: SyntheticConfig = SyntheticConfig(),
        preprocess: PreprocessConfig = PreprocessConfig(),
        augment: AugmentConfig = AugmentConfig(),
        split: SplitConfig = SplitConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        eval_batch_size: int = 128,
        num_workers: int = 2,
        pin_memory: bool = True,
        cache_dir: str | None = None,
        on_bad: str = "raise",
        seed: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root, self.synthetic, self.preprocess = root, synthetic, preprocess
        self.train_extra = list(train_extra or [])
        self.augment, self.split_config, self.sampler_config = augment, split, sampler
        self.eval_batch_size, self.num_workers, self.pin_memory = eval_batch_size, num_workers, pin_memory
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_root()
        self.on_bad, self.seed = on_bad, seed  # None: the run's seed (see sampler_seed)
        self.split: dict[str, list[str]] | None = None
        self._manifest: Path | None = None
        self._train_sampler: PKFMBatchSampler | None = None
        self._resume_position: dict | None = None  # from a checkpoint, for the next training loader

    # -- data preparation -------------------------------------------------------------------
    def manifest_paths(self) -> list[Path]:
        """The manifests of ``data.root`` (one path or a list, or the built-in synthetic set's), then
        those of ``data.train_extra``: auxiliary data sets (a synthetic set, another collection) whose
        signers all go to training, so the validation and test signers are those of ``data.root`` alone."""
        return self._root_paths() + [resolve_manifest(p) for p in self.train_extra]

    def _root_paths(self) -> list[Path]:
        if self.root is not None and not isinstance(self.root, (str, Path)):
            if not self.root:
                raise ValueError("data.root is an empty list; give one manifest or several (or leave it unset "
                                 "for the built-in synthetic set)")
            return [resolve_manifest(r) for r in self.root]
        return [resolve_manifest(self.root)] if self.root else [self.manifest_path()]

    def manifest_path(self) -> Path:
        if self._manifest is None:
            self._manifest = self._find_or_make_manifest()
        return self._manifest

    def _find_or_make_manifest(self) -> Path:
        if self.root:
            paths = self._root_paths()
            if len(paths) > 1:
                raise ValueError(f"data.root lists {len(paths)} manifests; this step needs exactly one")
            return paths[0]
        s = self.synthetic
        # Classic keeps the folder name it always had; another style's name carries a hash of its settings,
        # so a retuned style never reuses images drawn with the old ones.
        style = "" if s.style == "classic" else f"-{s.style}-{style_fingerprint(s.style)}"
        folder = self.cache_dir / f"synthetic-n{s.signers}-g{s.genuine}-f{s.forgeries}-seed{s.seed}{style}"
        if not (folder / "manifest.csv").is_file():
            log.info("data.root not set: generating the built-in synthetic set (%d signers) in %s", s.signers, folder)
            synthesize_dataset(folder, s.signers, s.genuine, s.forgeries, s.seed, workers=self.num_workers,
                               style_name=s.style)
        else:
            log.info("data.root not set: using the built-in synthetic set in %s", folder)
        return folder / "manifest.csv"

    def prepare_data(self) -> None:
        # Runs on one process per node: builds the synthetic set and the cache once.
        prepare(read_manifests(self.manifest_paths()), self.preprocess, self.cache_dir / "preprocessed",
                on_bad=self.on_bad, workers=self.num_workers)

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        paths = self.manifest_paths()
        records = read_manifests(paths)
        for note in signer_warnings(records):
            log.warning(note)
        prepared = prepare(records, self.preprocess, self.cache_dir / "preprocessed", on_bad=self.on_bad,
                           workers=self.num_workers)
        self.records, self.images = prepared.records, prepared.images
        self.signer_names = sorted({r.signer for r in self.records}, key=signer_order)
        signer_id = {s: i for i, s in enumerate(self.signer_names)}
        self.signer_ids = np.array([signer_id[r.signer] for r in self.records])
        self.genuine = np.array([r.genuine for r in self.records])
        datasets = {s: dataset_of(s) for s in self.signer_names} if len(paths) > 1 else None
        train_only = [dataset_name(path) for path in paths[len(paths) - len(self.train_extra):]]
        self.split = make_split(self.signer_names, self.split_config, datasets, train_only)
        self.data_fingerprint = data_fingerprint(records)  # the manifest's, before any bad image is skipped
        # Several data sets: each one's fingerprint as a run on it alone computes it (unprefixed ids).
        self.dataset_fingerprints = {dataset_name(path): data_fingerprint(read_manifest(path))
                                     for path in paths} if len(paths) > 1 else None
        self._save_split()
        log.info("split: %s", {k: len(v) for k, v in self.split.items()})

    def _save_split(self) -> None:
        trainer = self.trainer
        if trainer is None:
            return
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if trainer.is_global_zero and log_dir:
            save_split(self.split, Path(log_dir) / "split.json", self.split_config)

    def split_record(self) -> dict:
        """This run's signers, as checkpoints store them (see ``splits.refuse_seen_signers``)."""
        return split_record(self.split, self.data_fingerprint, self.dataset_fingerprints)

    def positions(self, part: str) -> np.ndarray:
        members = set(self.split[part])
        return np.array([i for i, r in enumerate(self.records) if r.signer in members], dtype=np.int64)

    def dataset(self, part: str, train: bool = False, shard: tuple[int, int] = (1, 0)) -> SignatureDataset:
        """The images of one split part; ``shard=(world, rank)`` keeps every world-th one."""
        transform = build_train_transform(self.augment) if train else None
        world, rank = shard
        positions = self.positions(part)[rank::world]
        if world > 1 and len(positions) == 0:
            # Every rank must hold some images: an empty rank would hang the others' gather.
            raise ValueError(f"the {part} part has fewer images ({len(self.positions(part))}) than processes ({world})")
        return SignatureDataset(self.images, self.signer_ids, self.genuine, positions, transform)

    # -- loaders ---------------------------------------------------------------------------------
    @property
    def sampler_seed(self) -> int:
        """``seed``, or else the run's seed: ``seed_everything`` (``--seed_everything N`` on the command
        line) records it in ``PL_GLOBAL_SEED`` at run time, so seeds vary the batches; the split has
        its own seed (``split.seed``), so they never vary the test signers."""
        return int(self.seed if self.seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def train_dataloader(self) -> DataLoader:
        data = self.dataset("train", train=True)
        c = self.sampler_config
        world, rank = self._world()
        sampler = PKFMBatchSampler(data.signers, data.genuine, c.p, c.k, c.f, c.m, c.batches_per_epoch,
                                   seed=self.sampler_seed, num_replicas=world, rank=rank)
        log.info("PKFM batches: %d per epoch and rank, seed %d", len(sampler), sampler.seed)
        if self._resume_position is not None:
            sampler.load_state_dict(self._resume_position)
            self._resume_position = None
        self._train_sampler = sampler
        return ResumableLoader(data, batch_sampler=sampler, progress=self._training_progress, **self._loader_args())

    def state_dict(self) -> dict:
        """Saved in checkpoints: where the training batches stand (see ``ResumableLoader``)."""
        if self._train_sampler is None:
            return {}
        return {"sampler": self._train_sampler.state_dict(*self._training_progress())}

    def load_state_dict(self, state: dict) -> None:
        self._resume_position = state.get("sampler")

    def _training_progress(self) -> tuple[int, bool]:
        """(batches of this epoch the training loop has consumed, whether the epoch is over)."""
        trainer = self.trainer
        if trainer is None:
            return 0, False
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, done >= trainer.num_training_batches

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> list[DataLoader]:
        # The validation signers come first: the operating threshold is fixed on them, then applied to test.
        return [self._eval_loader("val"), self._eval_loader("test")]

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, part: str) -> DataLoader:
        # Shard without padding (a DistributedSampler would duplicate samples into the metrics).
        data = self.dataset(part, shard=self._world())
        return DataLoader(data, batch_size=self.eval_batch_size, shuffle=False, **self._loader_args())

    def _loader_args(self) -> dict:
        workers = self.num_workers
        return dict(collate_fn=keep_batch, num_workers=workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                    persistent_workers=workers > 0, worker_init_fn=seed_worker_augmentation if workers > 0 else None)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
