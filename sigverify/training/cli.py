"""LightningCLI for sigverify: precision chosen by device, ``best``/``last`` checkpoints found in the run folder."""
from __future__ import annotations

import copy
import logging
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger

from sigverify.data.datamodule import SignatureDataModule
from sigverify.models.checkpoint import TrainedCheckpoint, run_checkpoint
from sigverify.models.module import SignatureVerifier
from sigverify.training.callbacks import ReportWriter

log = logging.getLogger(__name__)


class SigverifyCLI(LightningCLI):
    def __init__(self, **kwargs):
        super().__init__(SignatureVerifier, SignatureDataModule, save_config_kwargs={"overwrite": True},
                         parser_kwargs={"parser_mode": "omegaconf"}, **kwargs)

    # How to evaluate a network, not what the network is: the command's settings, never the checkpoint's.
    COMMAND_SETTINGS = ("evaluation", "inference", "allow_seen_signers")

    def add_arguments_to_parser(self, parser) -> None:
        # Every command writes its reports; `report` holds the writer's own settings (the explanation maps).
        parser.add_lightning_class_args(ReportWriter, "report")

    def _parse_ckpt_path(self) -> None:
        """Lightning rebuilds the model from a checkpoint file's stored hyperparameters; that would also
        bring back the evaluation settings it was trained with and silently drop the command's
        (``test --ckpt_path F --model.evaluation.protocol references`` would test the pairs protocol, and
        ``--model.allow_seen_signers true`` would be ignored). The network must match the weights; how to
        evaluate it is the command's choice, as it is with ``--ckpt_path best`` (resolved later, from the
        config alone). The checkpoint is read by the project's reader, which gives its settings today's names."""
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].model if subcommand else {}
        if subcommand:  # a run folder stands for its checkpoint: the best to evaluate, the last to resume
            config = self.config[subcommand]
            if config.get("ckpt_path") not in (None, "best", "last") and Path(config.ckpt_path).is_dir():
                config.ckpt_path = str(run_checkpoint(config.ckpt_path, "last" if subcommand == "fit" else "best"))
        # Resuming a fit keeps the run's own allow_seen_signers (its init_from was checked under it).
        keys = ("evaluation", "inference") if subcommand == "fit" else self.COMMAND_SETTINGS
        kept = {key: copy.deepcopy(model.get(key)) for key in keys if model.get(key) is not None}
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        hparams = TrainedCheckpoint.read(ckpt_path).hparams
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"{ckpt_path}: its stored hyperparameters do not parse as this model's settings\n")
            raise
        for key, value in kept.items():
            setattr(self.config[subcommand].model, key, value)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.get("precision") in (None, "auto"):
            on_gpu = torch.cuda.is_available() and trainer.get("accelerator") in ("auto", "gpu", "cuda")
            trainer.precision = "bf16-mixed" if on_gpu else "32-true"
            log.info("precision: %s (%s)", trainer.precision, "GPU found" if on_gpu else "no GPU")
        callbacks = trainer.get("callbacks") or []
        kept = [c for c in callbacks if not str(c.get("class_path", "")).endswith(".ReportWriter")]
        if len(kept) < len(callbacks):  # a run's config.yaml saved when the report writer was a list entry
            log.warning("trainer.callbacks lists ReportWriter: every command has its own now (`report`); "
                        "the list entry is left out")
            trainer.callbacks = kept
        if self.subcommand in ("validate", "test", "predict"):
            config.ckpt_path = resolve_checkpoint(config.get("ckpt_path"), trainer.get("default_root_dir"))
        if self.subcommand:
            log_per_subcommand(trainer, self.subcommand)
        if self.subcommand == "fit" and not (Path(trainer.get("default_root_dir") or ".") / "metrics.csv").exists():
            # The run folder already holds config.yaml and split.json, so Lightning's CSV logger warns that
            # earlier logs will be deleted; there are none to delete (a rerun over a metrics.csv still warns).
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")

    def finish_wandb(self) -> None:
        """Close the W&B run so its offline files are complete when the command returns."""
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()

    after_fit = after_validate = after_test = after_predict = finish_wandb


def log_per_subcommand(trainer_config, subcommand: str) -> None:
    """Evaluation runs log into ``<run>/<subcommand>/``: a CSV logger in the run folder itself would
    replace the training's metrics.csv. W&B runs carry the subcommand as their ``job_type``, so a
    group shows each member's fit and test apart."""
    for logger in trainer_config.get("logger") or []:
        if not isinstance(logger, dict) and not hasattr(logger, "get"):
            continue
        kind = str(logger.get("class_path", ""))
        if kind.endswith("CSVLogger") and subcommand != "fit":
            logger.init_args.version = subcommand
        elif kind.endswith("WandbLogger"):
            logger.init_args.job_type = subcommand


def resolve_checkpoint(ckpt_path: str | None, run_dir: str | None) -> str | None:
    """``best``/``last`` in a fresh process: look in ``<run_dir>/checkpoints`` (fit's ModelCheckpoint folder)."""
    if ckpt_path not in ("best", "last") or not run_dir:
        return ckpt_path
    return str(run_checkpoint(run_dir, ckpt_path))
