"""Callbacks: attraction/repulsion distributions (W&B histograms, scalars, PNG plots at the end)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


class DistributionMonitor(L.Callback):
    """Accumulates anchor-positive (attraction) and anchor-negative (repulsion) cosine similarities.

    Histograms and counts are summed on the device each step and read once per epoch, so logging
    costs no host sync per step. Each epoch logs the means, the hard/easy/valid triplet counts and
    the number of skipped batches (no valid anchor); W&B also gets the histograms. At the end of
    fit, ``distributions.png`` and ``distributions.json`` are written into the run folder.
    """

    def __init__(self, bins: int = 50):
        self.bins = bins
        self.edges = np.linspace(-1, 1, bins + 1)
        self.history: list[dict] = []
        self._acc: dict[str, torch.Tensor] | None = None

    def _accumulate(self, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        index = ((values.float() + 1) / 2 * self.bins).long().clamp_(0, self.bins - 1)
        self._acc[name].scatter_add_(0, index.reshape(-1), mask.reshape(-1).float())
        self._acc[name + "_sum"] += torch.where(mask, values.float(), torch.zeros_like(values.float())).sum()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        device = pl_module.device
        zeros = lambda n=(): torch.zeros(n, device=device)  # noqa: E731
        self._acc = {"attraction": zeros(self.bins), "repulsion": zeros(self.bins), "attraction_sum": zeros(),
                     "repulsion_sum": zeros(), "n_hard": zeros(), "n_easy": zeros(), "n_valid": zeros(),
                     "skipped_batches": zeros()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        out = pl_module.last_diagnostics
        if out is None or self._acc is None:
            return
        self._accumulate("attraction", out.attraction, out.attraction_mask)
        self._accumulate("repulsion", out.repulsion, out.repulsion_mask)
        for key in ("n_hard", "n_easy", "n_valid"):
            self._acc[key] += getattr(out, key)
        self._acc["skipped_batches"] += (out.n_valid == 0).float()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._acc is None:
            return
        acc = self._acc
        if trainer.world_size > 1:
            acc = {k: trainer.strategy.reduce(v, reduce_op="sum") for k, v in acc.items()}
        acc = {k: v.cpu().numpy() for k, v in acc.items()}  # the one sync of the epoch
        record = {"epoch": trainer.current_epoch,
                  "attraction_hist": acc["attraction"].tolist(), "repulsion_hist": acc["repulsion"].tolist()}
        for name in ("attraction", "repulsion"):
            record[f"{name}_mean"] = float(acc[name + "_sum"] / max(acc[name].sum(), 1))
        for key in ("n_hard", "n_easy", "n_valid", "skipped_batches"):
            record[key] = int(acc[key])
        self.history.append(record)
        scalars = {f"train/{k}": float(v) for k, v in record.items() if not k.endswith("hist") and k != "epoch"}
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

        for lg in loggers:
            lg.experiment.log({
                f"train/{name}_hist": wandb.Histogram(np_histogram=(np.asarray(record[f"{name}_hist"]), self.edges))
                for name in ("attraction", "repulsion")
            } | {"epoch": record["epoch"], "trainer/global_step": trainer.global_step})

    def on_fit_end(self, trainer, pl_module) -> None:
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not self.history or not trainer.is_global_zero or not log_dir:
            return
        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "distributions.json").write_text(json.dumps({"edges": self.edges.tolist(), "epochs": self.history}))
        plot_distributions(self.history, self.edges, folder / "distributions.png")


def plot_distributions(history: list[dict], edges: np.ndarray, path: Path) -> Path:
    """Means over epochs, and first vs last epoch histograms of attraction and repulsion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    centres = (edges[:-1] + edges[1:]) / 2
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["attraction_mean"] for h in history], label="attraction (anchor-positive)")
    ax1.plot(epochs, [h["repulsion_mean"] for h in history], label="repulsion (anchor-negative)")
    ax1.set(xlabel="epoch", ylabel="mean cosine similarity", title="Attraction and repulsion over training")
    ax1.legend()
    for h, style in ((history[0], ":"), (history[-1], "-")):
        for name, colour in (("attraction", "tab:blue"), ("repulsion", "tab:orange")):
            counts = np.asarray(h[f"{name}_hist"], float)
            ax2.plot(centres, counts / max(counts.sum(), 1), style, color=colour, label=f"{name}, epoch {h['epoch']}")
    ax2.set(xlabel="cosine similarity", ylabel="fraction", title="Distributions, first vs last epoch")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class EmbeddingWriter(L.pytorch.callbacks.BasePredictionWriter):
    """``sigverify predict`` writes the test signers' embeddings to ``<run>/predict/embeddings.npz``
    (arrays ``embedding``, ``signer`` (the data module's signer index), ``genuine``)."""

    def __init__(self):
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        from sigverify.training.distributed import gather_arrays

        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        arrays = [torch.cat([b[key] for b in batches]).cpu().numpy() for key in ("embedding", "signer", "genuine")]
        embedding, signer, genuine = gather_arrays(*arrays)
        if trainer.is_global_zero:
            folder = Path(trainer.default_root_dir) / "predict"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "embeddings.npz", embedding=embedding, signer=signer, genuine=genuine)
            log.info("wrote %d embeddings to %s", len(embedding), folder / "embeddings.npz")
