"""The LightningModule: it orchestrates; the network lives in ``embedding.py``, the loss in ``losses/``,
embedding collection in ``evaluation/collector.py``, the NaN guard, the distributions and report
writing in ``training/callbacks.py``.

Validation measures forgery detection on the validation signers (genuine-genuine vs
genuine-skilled pairs: EER, AUC), not signer identity. The EER threshold found there is kept in the
checkpoint and is the operating threshold applied, unchanged, to the test signers.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.model_helpers import _restricted_classmethod
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

from sigverify.data.splits import SPLIT_KEY, refuse_seen_signers, stored_val_from
from sigverify.evaluation.collector import EmbeddingCollector
from sigverify.evaluation.metrics import auc, eer
from sigverify.evaluation.protocols import pair_scores
from sigverify.evaluation.report import EvalConfig, carried_threshold, choose_threshold, evaluate, protocol_scores
from sigverify.evaluation.shortcut import image_statistics, statistics_floor
from sigverify.labels import SignatureLabels
from sigverify.losses import create_loss
from sigverify.models.checkpoint import TrainedCheckpoint, weights_sha256
from sigverify.models.embedding import EmbeddingEnsemble, embedder_from_hparams, laid_out, scoring_network, untrained_embedder
from sigverify.models.ensemble import load_member
from sigverify.models.inference import WITH_UNTRAINED, InferenceConfig
from sigverify.models.tta import ShiftAveraged

log = logging.getLogger(__name__)


class SignatureVerifier(L.LightningModule):
    def __init__(
        self,
        backbone: str = "tf_efficientnetv2_m",
        pretrained: bool = False,
        weights_file: str | None = None,
        freeze_stages: int = 0,
        frozen_bn_stats: str = "adapt",
        embedding_dim: int = 256,
        head_hidden: Sequence[int] = (512,),
        dropout: float = 0.4,
        drop_path_rate: float = 0.0,
        neck: str = "plain",
        neck_stages: int = 3,
        loss: str = "lsc_plus",
        loss_args: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        warmup_epochs: float = 5,
        warmup_start_lr: float = 1e-4,
        min_lr: float = 1e-6,
        schedule_epochs: int | None = None,
        decay_norms_and_biases: bool = True,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = True,
        compile: bool = False,
        val_loss_samples: int = 256,
        finite_check_every: int = 1,
        evaluation: EvalConfig = EvalConfig(),
        inference: InferenceConfig = InferenceConfig(),
        init_from: str | None = None,
        ema_decay: float | None = None,
        allow_seen_signers: bool = False,
    ):
        super().__init__()
        # The injected optimizer and scheduler are the config's to record (config.yaml), not the checkpoint's:
        # checkpoints hold only data, so they load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self._optimizer, self._scheduler = optimizer, scheduler
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay}")
        self.embedder = embedder_from_hparams(self.hparams)
        self._init_split: dict | None = None
        self._loaded_split: dict | None = None  # the signers of the checkpoint this model was loaded from
        self._loaded = False
        self._loaded_val_from: str | None = None  # how the loaded checkpoint's k-fold split drew validation signers
        if init_from:
            self._init_embedder(init_from)
        self.loss_fn = create_loss(loss, **(loss_args or {}))
        # LightningCLI may hand nested settings over as a mapping
        self.evaluation = evaluation if isinstance(evaluation, EvalConfig) else EvalConfig(**evaluation)
        self.inference = inference if isinstance(inference, InferenceConfig) else InferenceConfig(**inference)
        if self.evaluation.threshold_from:  # a report that embedded otherwise is refused before any work
            for protocol in (self.evaluation.protocol, *self.evaluation.also_protocols):
                carried_threshold(self.evaluation, protocol, inference=asdict(self.inference))
        self.val_threshold: float | None = None  # EER threshold on the validation signers
        # Non-persistent metric states: checkpoints are unchanged by them.
        self.collectors = nn.ModuleDict({stage: EmbeddingCollector() for stage in ("val", "test_threshold", "test")})
        self.validation_embeddings: tuple | None = None  # the last validation pass, for DistributionMonitor
        self.test_reports: dict[str, dict] = {}  # {protocol: report} of the last test (or validate) run
        self.test_scores: dict = {}  # {protocol: Scores}: what ReportWriter plots
        self._forward = self.embedder
        self._evaluation_forward: torch.nn.Module | None = None  # validate/test/predict: see _prepare_evaluation

    @_restricted_classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's loader, with the settings that moved since a local checkpoint file was written
        (``config.MOVED_SETTINGS``) handed over under today's names; keyword arguments still win. A URL, a
        stream, an ``hparams_file`` or ``weights_only=False`` is Lightning's alone to read."""
        local = isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).is_file()
        if local and not args and "hparams_file" not in kwargs and kwargs.get("weights_only") is not False:
            checkpoint = TrainedCheckpoint.read(checkpoint_path)  # read twice (here and by Lightning): small files
            stored = checkpoint.contents["hyper_parameters"]
            kwargs = {k: v for k, v in checkpoint.hparams.items() if stored.get(k) != v} | kwargs
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def _init_embedder(self, checkpoint_path: str) -> None:
        """Start from the embedding network of an earlier sigverify run (e.g. synthetic pretraining);
        the optimizer, schedule and epoch start afresh (unlike ``--ckpt_path``, which resumes)."""
        checkpoint = TrainedCheckpoint.read(checkpoint_path, "checkpoint to initialise from")
        try:
            self.embedder.load_state_dict(checkpoint.embedder_weights())
        except RuntimeError as err:
            raise ValueError(f"{checkpoint_path}: its network does not match this model's backbone/head settings ({err})") from err
        self._init_split = checkpoint.split
        log.info("embedding network initialised from %s", checkpoint_path)

    def configure_callbacks(self):
        """``ema_decay``: validate, checkpoint and test an exponential moving average of the weights
        (Lightning's EMAWeightAveraging), which evens out the step-to-step noise of small-batch metric
        learning. The other callbacks (NaN guard, reports, diagnostics) are declared in the trainer's YAML."""
        if self.trainer.state.fn != "fit" or self.hparams.ema_decay is None:
            return []
        return [EMAWeightAveraging(decay=self.hparams.ema_decay)]

    # -- the signers this model may see --------------------------------------------------------
    def this_run_split(self) -> dict | None:
        datamodule = getattr(self.trainer, "datamodule", None)
        return datamodule.split_record() if getattr(datamodule, "split", None) is not None else None

    def setup(self, stage: str) -> None:
        if stage == "fit":  # before any callback's forward pass (the model summary's)
            self._evaluation_forward = None  # left by an earlier validate/test in this process
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and getattr(datamodule, "preprocess", None) is not None:
            # One image of the input size: Lightning's model summary counts a forward pass's FLOPs on it.
            size = (datamodule.preprocess.height, datamodule.preprocess.width)
            self.example_input_array = torch.zeros(1, 1, *size, dtype=torch.uint8)
        if self.hparams.init_from and stage == "fit":
            this_run = self.this_run_split()
            if this_run is not None:
                refuse_seen_signers(self._init_split, this_run, f"model.init_from {self.hparams.init_from}",
                                    self.hparams.allow_seen_signers)
        if self.hparams.compile:
            # Not registered as a submodule, so checkpoints keep the plain parameter names.
            object.__setattr__(self, "_forward", torch.compile(self.embedder))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["val_threshold"] = self.val_threshold
        this_run = self.this_run_split()
        if this_run is not None:
            # A model initialised from another carries that model's signers in its weights too.
            checkpoint[SPLIT_KEY] = {**this_run, "init": self._init_split} if self._init_split else this_run

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.val_threshold = checkpoint.get("val_threshold")
        self._loaded_split, self._loaded = checkpoint.get(SPLIT_KEY), True
        self._loaded_val_from = stored_val_from((checkpoint.get("datamodule_hyper_parameters") or {}).get("split"))

    def _refuse_a_model_that_saw_these_signers(self) -> None:
        """validate/test/predict of a checkpoint under another split (another fold, another split seed)
        would score signers the model trained on: refused like an ensemble member. A checkpoint that
        predates the record is let through with a warning (it is the model under test, not an addition)."""
        this_run = self.this_run_split()
        if this_run is None or not self._loaded:
            return
        if self._loaded_split is None:
            log.warning("this checkpoint does not record which signers it was trained on; make sure this run's "
                        "validation and test signers were not among them")
            return
        try:
            refuse_seen_signers(self._loaded_split, this_run, "the checkpoint under evaluation",
                                self.hparams.allow_seen_signers)
        except ValueError as err:
            theirs, ours = self._loaded_val_from, self.trainer.datamodule.split_config.val_from
            if theirs and theirs != ours:  # e.g. a run fitted before 2026-12-06, when every fold's came from the front
                raise ValueError(f"{err} Its k-fold split drew validation signers by data.split.val_from {theirs}, this "
                                 f"run by {ours}: repeat its split with --data.split.val_from {theirs}") from err
            raise

    # -- forward -------------------------------------------------------------------------------
    def _laid_out(self, network: torch.nn.Module) -> torch.nn.Module:
        """``channels_last``, again once the model is on its device (these hooks). The network is built in its
        layout and a move should keep it, but a GPU session once found Lightning's move had not (docs/benchmarks.md)."""
        return laid_out(network, self.hparams.channels_last)

    def _with_ensemble(self, network: torch.nn.Module) -> torch.nn.Module:
        """``inference.ensemble``: this model together with other trained ones (see ``ensemble.py``).
        The members are not submodules, so checkpoints hold this model alone. A member that saw this
        run's validation or test signers is refused (``allow_seen_signers`` to override)."""
        paths = self.inference.ensemble
        if not paths:
            return network
        datamodule = getattr(self.trainer, "datamodule", None)
        this_run = self.this_run_split()
        members = []
        for path in paths:
            member, split = load_member(path, getattr(datamodule, "preprocess", None), self.inference.features)
            if this_run is not None:
                refuse_seen_signers(split, this_run, f"ensemble member {path}", self.hparams.allow_seen_signers)
            members.append(member)
        ensemble = self._laid_out(EmbeddingEnsemble([network, *members]).to(self.device))
        log.info("scoring an ensemble of this model and %d more: %s", len(members), ", ".join(paths))
        return ensemble

    def _with_features(self, network: torch.nn.Module) -> torch.nn.Module:
        """``inference.features``: ``backbone`` scores the backbone's pooled features instead of the embedding
        (the untrained pretrained network's features are the baseline of a recipe that starts from them);
        ``both`` averages the two's similarities; ``backbone_and_untrained`` the backbone's with those of the
        network it started from, rebuilt here."""
        features = self.inference.features
        if features == "embedding":
            return network
        log.info("scoring with model.inference.features %s", features)
        untrained = self._laid_out(untrained_embedder(self.hparams).to(self.device)) if features == WITH_UNTRAINED else None
        return scoring_network(self.embedder, features, untrained)

    def _with_tta(self, network: torch.nn.Module) -> torch.nn.Module:
        """``inference.tta_shift``: embeddings averaged over shifted copies of each image (``tta.py``)."""
        shift = self.inference.tta_shift
        if not shift:
            return network
        log.info("test-time augmentation: embeddings averaged over 5 views shifted by %g of the image", shift)
        return ShiftAveraged(network, shift)

    def _prepare_evaluation(self) -> None:
        """validate/test/predict embed through the ensemble and test-time augmentation, built once; fit's
        own validation does not (its forward pass is the training steps' one, and stays a single network)."""
        self._laid_out(self.embedder)
        if self.trainer.state.fn == "fit" or self._evaluation_forward is not None:
            return
        self._refuse_a_model_that_saw_these_signers()
        network = self._with_ensemble(self._with_features(self._forward))
        object.__setattr__(self, "_evaluation_forward", self._with_tta(network))

    def on_fit_start(self) -> None:
        if self.inference.ensemble:
            raise ValueError("model.inference.ensemble scores trained models together in validate/test/predict; "
                             "fit trains one model: leave it out of the fit's config")
        self._laid_out(self.embedder)

    def on_validation_start(self) -> None:
        self._prepare_evaluation()

    def on_test_start(self) -> None:
        self._prepare_evaluation()

    def on_predict_start(self) -> None:
        self._prepare_evaluation()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        evaluating = self._evaluation_forward is not None and not self.training
        return (self._evaluation_forward if evaluating else self._forward)(images)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int):
        images, signers, genuine = batch
        # A batch without a valid anchor gives a zero loss with no gradient (never NaN); the
        # DistributionMonitor counts such batches. Returning None instead would need a host sync
        # and would leave DDP ranks out of step.
        out = self.loss_fn(self(images), SignatureLabels(signers, genuine))
        self.log("train/loss", out.loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        # The loss's diagnostics (the batch's similarities and counts, on the device) reach the callbacks through
        # the step's output: DistributionMonitor reads them in on_train_batch_end.
        return {"loss": out.loss, "loss_output": out}

    def configure_optimizers(self):
        """The optimizer and scheduler the config injects (``model.optimizer`` / ``model.scheduler``, any
        ``class_path`` with its ``init_args``), or by default AdamW at ``lr`` / ``weight_decay`` with a linear
        warm-up then cosine decay, per step (timm's CosineLRScheduler). ``decay_norms_and_biases: false`` takes
        norms and biases out of the weight decay (timm's ``param_groups_weight_decay``)."""
        hp = self.hparams
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = trainable if hp.decay_norms_and_biases else param_groups_weight_decay(self, hp.weight_decay)
        if self._optimizer is not None:
            optimizer = self._optimizer(groups)
        else:
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if self._scheduler is not None:
            return {"optimizer": optimizer, "lr_scheduler": self._scheduler(optimizer)}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self._warmup_cosine(optimizer), "interval": "step"}}

    def _warmup_cosine(self, optimizer) -> CosineLRScheduler:
        """From ``warmup_start_lr`` to ``lr`` linearly over ``warmup_epochs``, then a cosine to ``min_lr`` at the
        end of ``schedule_epochs`` (default: ``trainer.max_epochs``; longer: a run stopped part of the way
        through a longer schedule has its learning rates, epoch for epoch); stepped per optimizer step."""
        hp = self.hparams
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = self.trainer.estimated_stepping_batches / epochs
        schedule = hp.get("schedule_epochs") or epochs
        if schedule < epochs:
            raise ValueError(f"model.schedule_epochs ({schedule}) is shorter than trainer.max_epochs ({epochs}): "
                             "the learning rate would stay at its floor after the schedule ends")
        total, warmup = int(round(schedule * steps_per_epoch)), int(round(hp.warmup_epochs * steps_per_epoch))
        return CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=hp.min_lr, warmup_t=warmup,
                                 warmup_lr_init=hp.warmup_start_lr, warmup_prefix=True, t_in_epochs=False)

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """timm's schedulers take the number of optimizer steps done; PyTorch's step themselves."""
        if isinstance(scheduler, CosineLRScheduler):
            scheduler.step_update(num_updates=self.global_step)
        else:
            super().lr_scheduler_step(scheduler, metric)

    # -- validation / test ---------------------------------------------------------------------
    def _collect(self, stage: str, batch) -> None:
        images, signers, genuine = batch
        self.collectors[stage].update(self(images), signers, genuine, image_statistics(images))

    def collected(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """This stage's embeddings, signer ids, genuine flags and image statistics from every rank, then cleared."""
        collector = self.collectors[stage]
        values = collector.compute()
        collector.reset()
        return values

    def validation_step(self, batch, batch_idx: int) -> None:
        self._collect("val", batch)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        # The data module's test loaders: 0 = validation signers (threshold), 1 = test signers.
        self._collect(("test_threshold", "test")[dataloader_idx], batch)

    def predict_step(self, batch, batch_idx: int):
        images, signers, genuine = batch
        return {"embedding": self(images).float(), "signer": signers, "genuine": genuine}  # to the CPU once, at the end

    def on_validation_epoch_end(self) -> None:
        val = self.collected("val")
        emb, signers, genuine, _ = val
        if len(emb) == 0:
            return
        if not self.trainer.sanity_checking:  # an untrained model's few batches are no epoch's figures
            self.validation_embeddings = (emb, signers, genuine)
        scores = pair_scores(emb, signers, genuine)
        val_eer, threshold = eer(scores.genuine, scores.skilled)
        self.val_threshold = threshold
        metrics = {"val/eer": val_eer, "val/auc": auc(scores.genuine, scores.skilled), "val/threshold": threshold,
                   "val/pos_score": float(scores.genuine.mean()), "val/neg_score": float(scores.skilled.mean()),
                   "val/loss": self._val_loss(emb, signers, genuine), "val/n_embeddings": float(len(emb))}
        self.log_dict(metrics, sync_dist=False)
        if self.trainer.state.fn == "validate":
            self._report_all_protocols(val, val, "validation signers themselves, at their EER (a posteriori: "
                                                 "a screening figure, not an operating threshold)")

    def on_test_epoch_end(self) -> None:
        """One report per protocol (``evaluation.protocol``, then ``also_protocols``), all from this one
        pass of embeddings: threshold from the validation signers (same protocol), applied unchanged to test."""
        self._report_all_protocols(self.collected("test_threshold"), self.collected("test"))

    def _report_all_protocols(self, val, test, threshold_note: str | None = None) -> None:
        # validate's report figures go under validate/: val/eer etc. are already logged this epoch,
        # and a key logged twice in one hook is averaged by Lightning.
        stage = "test" if self.trainer.state.fn == "test" else "validate"
        self.test_reports, self.test_scores = {}, {}
        weights = self.weights_sha256()  # once per pass: hashing a large network takes a while
        for protocol in (self.evaluation.protocol, *self.evaluation.also_protocols):
            config = replace(self.evaluation, protocol=protocol, also_protocols=[])
            report, scores = self._report(val, test, config, threshold_note, weights)
            self.test_reports[protocol], self.test_scores[protocol] = report, scores
            prefix = stage if protocol == self.evaluation.protocol else f"{stage}/{protocol}"
            numbers = {f"{prefix}/{k}": float(v) for k, v in report.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
            self.log_dict(numbers, sync_dist=False)

    def _report(self, val, test, config: EvalConfig, threshold_note: str | None, weights: str):
        validation = None
        if config.threshold_from:  # carried over: needs no validation signers here, and is held fixed
            threshold, source = carried_threshold(config, model_sha256=weights, inference=asdict(self.inference))
        elif len(val[0]):
            validation = protocol_scores(*val[:3], config)
            threshold, source = choose_threshold(validation, config)
        elif config.protocol == "pairs" and self.val_threshold is not None:
            threshold, source = self.val_threshold, "validation signers, at their EER (from the checkpoint)"
        else:
            raise ValueError("no validation signers to fix the threshold on; give the split a val part")
        scores = protocol_scores(*test[:3], config)
        report = evaluate(scores, threshold, threshold_note or source, config,
                          validation if validation is not None and val is not test else None)
        report["model_sha256"], report["inference"] = weights, asdict(self.inference)
        if val[3] is not None and test[3] is not None and len(val[0]):
            floor = statistics_floor((val[3], *val[1:3]), (test[3], *test[1:3]), config)
            report["image_statistics"], report["image_statistics_eer"] = floor, floor["eer"]
        return report, scores

    def weights_sha256(self) -> str:
        """Names the network a report's threshold belongs to (``threshold_from`` refuses another's)."""
        return weights_sha256(self.embedder.state_dict())

    def _val_loss(self, emb, signers, genuine) -> float:
        """The training loss on a fixed subset of validation embeddings (the loss is O(B^2) or O(B^3))."""
        n = min(len(emb), self.hparams.val_loss_samples)
        pick = np.sort(np.random.default_rng(0).permutation(len(emb))[:n])
        labels = SignatureLabels(torch.as_tensor(signers[pick]), torch.as_tensor(genuine[pick]))
        return float(self.loss_fn(torch.as_tensor(emb[pick]), labels).loss)
