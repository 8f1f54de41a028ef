"""Callbacks: the similarity distributions (training batches and validation signers), the NaN guard,
a line per epoch, evaluation reports and the predict writer."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from sigverify.evaluation.collector import EmbeddingCollector
from sigverify.evaluation.report import write_report
from sigverify.explain import ExplainConfig
from sigverify.labels import SignatureLabels

log = logging.getLogger(__name__)

# The three kinds of pair every distribution is split into (rows: genuine anchors).
KINDS = {
    "genuine": "genuine - genuine, same signer (attraction)",
    "skilled": "genuine - its skilled forgery (repulsion)",
    "other": "genuine - another signer (repulsion)",
}
COUNTS = ("n_hard", "n_easy", "n_valid", "skipped_batches")


class DistributionMonitor(L.Callback):
    """Cosine similarities of every genuine anchor with the three kinds of pair (``KINDS``): within
    the training batches (whatever the loss selects, so losses compare like with like) and among
    the validation signers, after each validation.

    The training gap between ``genuine`` and ``skilled`` is what the loss is fitting; the validation
    gap is what generalises to unseen signers; ``other`` is the easy, random-forgery side. Each epoch
    logs the means (``train/sim_<kind>``, ``val/sim_<kind>``; CSV and W&B), the histograms (W&B),
    the triplet counts and, for LSC+, how often its positive pull acts (``train/pull_active_fraction``).
    Training histograms are summed on the device each step and read once per epoch (no host sync per
    step). At the end of fit, ``distributions.png`` and ``distributions.json`` go into the run folder.
    """

    def __init__(self, bins: int = 50, val_block: int = 2048):
        self.bins, self.val_block = bins, val_block
        self.edges = np.linspace(-1, 1, bins + 1)
        self.history: list[dict] = []
        self._acc: dict[str, torch.Tensor] | None = None

    def _histogram(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts per bin, sum of values) of the masked entries."""
        index = ((values.float() + 1) / 2 * self.bins).long().clamp_(0, self.bins - 1)
        counts = torch.zeros(self.bins, device=values.device).scatter_add_(0, index.reshape(-1), mask.reshape(-1).float())
        return counts, torch.where(mask, values.float(), torch.zeros_like(values.float())).sum()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._acc = {}

    def _add(self, key: str, value: torch.Tensor) -> None:
        self._acc[key] = self._acc[key] + value if key in self._acc else value.clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        out = outputs.get("loss_output") if isinstance(outputs, dict) else None  # the training step's diagnostics
        if out is None:
            return
        if self._acc is None:  # a mid-epoch resume skips on_train_epoch_start
            self._acc = {}
        for kind in KINDS:
            counts, total = self._histogram(out.pairs.similarity, getattr(out.pairs, kind))
            self._add(f"{kind}_hist", counts), self._add(f"{kind}_sum", total)
        for key in ("n_hard", "n_easy", "n_valid"):
            self._add(key, getattr(out, key).float())
        self._add("skipped_batches", (out.n_valid == 0).float())
        for key, value in out.counts.items():
            self._add(key, value.float())

    def validation_histograms(self, embeddings: np.ndarray, signers: np.ndarray, genuine: np.ndarray) -> dict:
        """The same three histograms over all pairs of the validation signers, in blocks of anchor rows."""
        emb = torch.as_tensor(embeddings, dtype=torch.float32)
        labels = SignatureLabels(torch.as_tensor(signers), torch.as_tensor(genuine, dtype=torch.bool))
        acc = {}
        for start in range(0, len(emb), self.val_block):
            rows = slice(start, start + self.val_block)
            similarity = emb[rows] @ emb.T
            for kind, mask in zip(KINDS, labels.role_masks(rows)):
                counts, total = self._histogram(similarity, mask)
                acc[f"{kind}_hist"] = acc.get(f"{kind}_hist", 0) + counts
                acc[f"{kind}_sum"] = acc.get(f"{kind}_sum", 0) + total
        return {k: v.numpy() for k, v in acc.items()}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Validation at the end of an epoch runs before this hook (Lightning 2): its embeddings are in.
        if self._acc is None:
            return
        acc = self._acc
        if trainer.world_size > 1:
            acc = {k: trainer.strategy.reduce(v, reduce_op="sum") for k, v in acc.items()}
        acc = {k: v.cpu().numpy() for k, v in acc.items()}  # the one sync of the epoch
        record = {"epoch": trainer.current_epoch, "train": _summary(acc, KINDS)}
        record.update({key: int(acc.get(key, 0)) for key in COUNTS})
        if "pull_terms" in acc:
            record["pull_active_fraction"] = float(acc["pull_active"] / max(acc["pull_terms"], 1))
        if pl_module.validation_embeddings is not None:
            record["val"] = _summary(self.validation_histograms(*pl_module.validation_embeddings), KINDS)
            pl_module.validation_embeddings = None  # an epoch without validation must not reuse it
        self.history.append(record)
        scalars = {f"{stage}/sim_{kind}": record[stage][kind]["mean"] for stage in ("train", "val") if stage in record
                   for kind in KINDS if record[stage][kind]["mean"] is not None}
        scalars.update({f"train/{k}": float(record[k]) for k in (*COUNTS, "pull_active_fraction") if k in record})
        pl_module.log_dict(scalars, sync_dist=False, rank_zero_only=True)
        if record["skipped_batches"]:
            log.warning("epoch %d: %d batch(es) had no valid anchor and were skipped", record["epoch"],
                        record["skipped_batches"])
        self._log_wandb(trainer, record)

    def _log_wandb(self, trainer, record: dict) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        import wandb

        histograms = {f"{stage}/sim_{kind}_hist": wandb.Histogram(np_histogram=(np.asarray(record[stage][kind]["hist"]),
                                                                                 self.edges))
                      for stage in ("train", "val") if stage in record for kind in KINDS}
        for lg in loggers:
            lg.experiment.log(histograms | {"epoch": record["epoch"], "trainer/global_step": trainer.global_step})

    def on_fit_end(self, trainer, pl_module) -> None:
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not self.history or not trainer.is_global_zero or not log_dir:
            return
        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "distributions.json").write_text(json.dumps({"edges": self.edges.tolist(), "kinds": KINDS,
                                                               "epochs": self.history}))
        plot_distributions(self.history, self.edges, folder / "distributions.png")


def _summary(acc: dict, kinds) -> dict:
    """{kind: {"hist": counts, "mean": mean similarity or None}} from summed counts and values."""
    out = {}
    for kind in kinds:
        hist = np.asarray(acc.get(f"{kind}_hist", np.zeros(0)), float)
        total = hist.sum()
        out[kind] = {"hist": hist.tolist(), "mean": float(acc[f"{kind}_sum"] / total) if total else None}
    return out


COLOURS = {"genuine": "tab:green", "skilled": "tab:red", "other": "tab:blue"}


def plot_distributions(history: list[dict], edges: np.ndarray, path: Path) -> Path:
    """Mean similarity of each kind of pair over epochs (training batches solid, validation signers
    dashed), then the last epoch's histograms of both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sigverify.evaluation.figure import save_figure

    epochs = [h["epoch"] for h in history]
    centres = (edges[:-1] + edges[1:]) / 2
    stages = [s for s in ("train", "val") if s in history[-1]]
    fig, axes = plt.subplots(1, 1 + len(stages), figsize=(5.5 * (1 + len(stages)), 4))
    for stage, style in (("train", "-"), ("val", "--")):
        for kind, label in KINDS.items():
            points = [(h["epoch"], h[stage][kind]["mean"]) for h in history if stage in h and h[stage][kind]["mean"] is not None]
            if points:
                axes[0].plot(*zip(*points), style, color=COLOURS[kind], label=f"{stage}: {label}")
    axes[0].set(xlabel="epoch", ylabel="mean cosine similarity", title="Training batches (solid), validation signers (dashed)",
                xlim=(min(epochs), max(max(epochs), min(epochs) + 1)))
    axes[0].legend(fontsize=6, loc="lower left", bbox_to_anchor=(0, 1.08), ncol=2, frameon=False)
    for ax, stage in zip(axes[1:], stages):
        for kind, label in KINDS.items():
            counts = np.asarray(history[-1][stage][kind]["hist"], float)
            if counts.sum():
                ax.plot(centres, counts / counts.sum(), color=COLOURS[kind], label=label)
        name = "training batches" if stage == "train" else "validation signers"
        ax.set(xlabel="cosine similarity", ylabel="fraction of pairs", title=f"{name}, epoch {history[-1]['epoch']}")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


class NonFiniteLossError(FloatingPointError):
    pass


class FiniteLossGuard(L.Callback):
    """Stops training at the first NaN/Inf loss, naming the step, before that step's update.

    The first bad step is recorded on the device; the host looks every ``every`` steps (1: every
    step, before the optimizer step; larger values save a host sync per step) and again at the end
    of each epoch and before validation, so no bad weights reach a checkpoint.
    """

    def __init__(self, every: int | None = None):
        self.every = every  # None: the model's finite_check_every (a preset's model settings choose it)
        self._first_bad: torch.Tensor | None = None
        self._batch_idx = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        every = self.every or getattr(pl_module, "hparams", {}).get("finite_check_every", 1)
        if every < 1:
            raise ValueError(f"finite_check_every must be >= 1, got {every}")
        self.every = every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, device=loss.device, dtype=torch.long)
        step = torch.full((), trainer.global_step, device=loss.device, dtype=torch.long)
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, step, self._first_bad)
        if (self._batch_idx + 1) % self.every == 0:
            self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer) -> None:
        if self._first_bad is None:
            return
        if trainer.world_size > 1:  # every rank stops together, or the others would wait in the next collective
            self._first_bad = trainer.strategy.reduce(self._first_bad, reduce_op="max")
        if int(self._first_bad) >= 0:
            step, self._first_bad = int(self._first_bad), None
            raise NonFiniteLossError(
                f"non-finite loss at global step {step} (epoch {trainer.current_epoch}); stopping. The last good "
                "checkpoint is kept; lower the learning rate or check the data.")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._raise_if_bad(trainer)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._raise_if_bad(trainer)


class EpochLog(L.Callback):
    """A line per epoch (training loss, validation EER, the best so far, time) when the run has no progress
    bar: without one (the demo, logs of long runs) a fit would print nothing for minutes."""

    def __init__(self):
        self._best: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after the epoch's validation
        if trainer.progress_bar_callback is not None or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        if "train/loss_epoch" in metrics:
            line += f": training loss {float(metrics['train/loss_epoch']):.4f}"
        if "val/eer" in metrics:
            value = float(metrics["val/eer"])
            self._best = value if self._best is None else min(self._best, value)
            line += f", validation EER {100 * value:.1f} % (best {100 * self._best:.1f} %)"
        log.info("%s, %.0f s", line, time.monotonic() - self._started)


class ReportWriter(L.Callback):
    """In validate and test (never in fit), writes the reports of ``sigverify test`` into ``<run>/test-<protocol>/`` and those of
    ``sigverify validate`` (validation signers only: for screening recipes) into ``validate-<protocol>/``:
    report.json, report.md, scores.npz and the plots (``evaluation/report.py``). ``explain``: the explanation maps
    of the test's errors beside the first report (``sigverify test --explain N``). Every command has one, as
    ``report`` in its config (``training/cli.py``)."""

    def __init__(self, explain: ExplainConfig = ExplainConfig()):
        self.explain = explain if isinstance(explain, ExplainConfig) else ExplainConfig(**explain)

    def _write(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for i, (protocol, report) in enumerate(pl_module.test_reports.items()):
            folder = Path(trainer.default_root_dir) / f"{stage}-{protocol}"
            if stage == "test" and i == 0 and self.explain.maps:
                report = {**report, "explanations": self._explain(trainer, pl_module, folder / "explain")}
            path = write_report(report, pl_module.test_scores[protocol], folder)
            log.info("%s report: %s", stage, path)

    def _explain(self, trainer, pl_module, folder: Path) -> dict:
        """``--explain N``: maps of the most confident errors and the ink-attribution distribution
        (``sigverify.explain.errors``), written beside the first protocol's report."""
        from sigverify.explain.errors import explain_test_errors

        data, config = trainer.datamodule, self.explain
        parts = {}
        for part in ("val", "test"):
            positions = data.positions(part)
            parts[part] = (np.asarray(data.images[positions]), data.signer_ids[positions], data.genuine[positions])
        summary = explain_test_errors(pl_module.embedder, *parts["test"], parts["val"], folder, config.maps,
                                      config.sample, config.method, names=data.signer_names,
                                      target_far=pl_module.evaluation.target_far)
        if summary["warning"]:
            log.warning("explanation maps: %s", summary["warning"])
        return summary

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "test")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "validate")


class EmbeddingWriter(L.pytorch.callbacks.BasePredictionWriter):
    """``sigverify predict`` writes the test signers' embeddings to ``<run>/predict/embeddings.npz``
    (arrays ``embedding``, ``signer`` (the data module's signer index), ``genuine``)."""

    def __init__(self):
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        collector = EmbeddingCollector().to(pl_module.device)
        for b in batches:  # on the module's device: the gather runs through the process group's backend
            collector.update(*(b[k].to(pl_module.device) for k in ("embedding", "signer", "genuine")))
        embedding, signer, genuine, _ = collector.compute()  # every rank's, gathered
        if trainer.is_global_zero:
            folder = Path(trainer.default_root_dir) / "predict"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "embeddings.npz", embedding=embedding, signer=signer, genuine=genuine)
            log.info("wrote %d embeddings to %s", len(embedding), folder / "embeddings.npz")
