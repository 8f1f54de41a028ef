"""The PKFM batches as a real Trainer delivers them to the training step: new every epoch, set by
the seed, resumed mid-epoch where they stopped, sharded under DDP, never an image twice in a batch."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from sigverify.cli import main
from sigverify.data.augment import AugmentConfig
from sigverify.data.datamodule import SamplerConfig, SignatureDataModule, SyntheticConfig
from sigverify.data.preprocess import PreprocessConfig
from sigverify.models.module import SignatureVerifier

from batch_recorder import BatchRecorder, by_epoch, fingerprint, read_batches

# Augmentation off: the same dataset index then always reaches the step as the same image.
TINY = ["--model.backbone", "test_efficientnet", "--model.head_hidden", "[32]", "--data.preprocess.height", "32",
        "--data.preprocess.width", "64", "--data.synthetic.signers", "12", "--data.synthetic.genuine", "4",
        "--data.synthetic.forgeries", "4", "--data.sampler.p", "4", "--data.sampler.batches_per_epoch", "3",
        "--data.augment.enabled", "false", "--trainer.enable_progress_bar", "false",
        "--config", "configs/trainer/csv_only.yaml", "--trainer.callbacks+=batch_recorder.BatchRecorder"]


def fit(tmp_path, name, seed, *extra):
    main(["fit", "--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", name,
          "--data.cache_dir", str(tmp_path / "cache"), *TINY, "--seed_everything", str(seed), *extra])
    return by_epoch(read_batches(tmp_path / "runs" / name))


def test_sigverify_fit_draws_new_batches_every_epoch_and_follows_the_seed(tmp_path):
    # One loader worker: the worker path prefetches index batches before Lightning sets the epoch.
    first = fit(tmp_path, "seed1", 1, "--trainer.max_epochs", "3", "--data.num_workers", "1")
    assert len(first) == 3 and len(set(map(tuple, first.values()))) == 3  # three different epochs
    for batches in first.values():
        assert all(len(set(batch)) == len(batch) == 24 for batch in batches)  # no image twice in a batch
    again = fit(tmp_path, "seed1_again", 1, "--trainer.max_epochs", "3", "--data.num_workers", "0")
    assert again == first  # the same seed: the same batches, with or without loader workers
    other = fit(tmp_path, "seed2", 2, "--trainer.max_epochs", "1", "--data.num_workers", "0")
    assert other[0][0] != first[0][0]  # --seed_everything reaches the data at run time


class PlainOptimizer(SignatureVerifier):
    """A module whose configure_optimizers does not ask for estimated_stepping_batches: Lightning then
    restores the loader's own state (ResumableLoader) instead of only the data module's."""

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def tiny_parts(tmp_path, workers=0, module=SignatureVerifier):
    data = SignatureDataModule(synthetic=SyntheticConfig(signers=12, genuine=4, forgeries=4), cache_dir=str(tmp_path / "cache"),
                               preprocess=PreprocessConfig(height=32, width=64), augment=AugmentConfig(enabled=False),
                               sampler=SamplerConfig(p=4, batches_per_epoch=5), num_workers=workers, seed=3)
    return module(backbone="test_efficientnet", head_hidden=[32], warmup_epochs=1), data


class CrashAfter(L.Callback):
    """Saves a checkpoint after a training batch, then fails: a preempted job's last word."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise RuntimeError("preempted")


def make_trainer(tmp_path, callbacks, epochs=2):
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, default_root_dir=tmp_path, use_distributed_sampler=False,
                     num_sanity_val_steps=0, limit_val_batches=0)


@pytest.mark.parametrize("workers, module", [(0, SignatureVerifier), (1, SignatureVerifier), (0, PlainOptimizer)])
def test_mid_epoch_resume_continues_the_epochs_own_batches(tmp_path, workers, module):
    L.seed_everything(0)
    full = BatchRecorder()
    model, data = tiny_parts(tmp_path, workers, module)
    make_trainer(tmp_path / "full", [full]).fit(model, data)

    before, ckpt = BatchRecorder(), tmp_path / "mid.ckpt"
    model, data = tiny_parts(tmp_path, workers, module)
    with pytest.raises(RuntimeError, match="preempted"):
        make_trainer(tmp_path / "crashed", [before, CrashAfter(7, ckpt)]).fit(model, data)  # batch 2 of epoch 1
    after = BatchRecorder()
    model, data = tiny_parts(tmp_path, workers, module)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dataloader is not resumable.*")
        make_trainer(tmp_path / "resumed", [after]).fit(model, data, ckpt_path=str(ckpt))

    key = lambda b: (b["epoch"], b["batch"], tuple(b["images"]))  # noqa: E731
    assert [key(b) for b in after.batches][0][:2] == (1, 2)
    assert [key(b) for b in before.batches + after.batches] == [key(b) for b in full.batches]


@pytest.mark.parametrize("saved_after, workers", [("training", 0), ("validation", 1)])
def test_end_of_epoch_resume_starts_the_next_epoch_fresh(tmp_path, saved_after, workers):
    """Checkpoints written at the end of the training epoch (no validation) or after validation, as
    the configs' ModelCheckpoint (monitor val/eer) writes them."""
    L.seed_everything(0)
    full = BatchRecorder()
    model, data = tiny_parts(tmp_path, workers)
    make_trainer(tmp_path / "full", [full], epochs=3).fit(model, data)
    ckpt = tmp_path / "epoch.ckpt"
    model, data = tiny_parts(tmp_path, workers)
    last = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="epoch", monitor=None,
                                               save_on_train_epoch_end=saved_after == "training")
    trainer = L.Trainer(max_epochs=2, callbacks=[last], logger=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, use_distributed_sampler=False,
                        limit_val_batches=0 if saved_after == "training" else 1.0)
    trainer.fit(model, data)
    after = BatchRecorder()
    model, data = tiny_parts(tmp_path, workers)
    make_trainer(tmp_path / "resumed", [after], epochs=3).fit(model, data, ckpt_path=str(ckpt))
    resumed = [tuple(b["images"]) for b in after.batches if b["epoch"] == 2]
    assert resumed == [tuple(b["images"]) for b in full.batches if b["epoch"] == 2]
    # Lightning 2.6 restores a checkpoint written after validation as if one batch of its epoch were
    # left, and runs it (batch 5 of 5): that one extra step draws from where the data stand, the next
    # epoch's first batch. A checkpoint written at the end of the training epoch has no such step.
    extra = [b for b in after.batches if b["epoch"] == 1]
    assert len(extra) == (1 if saved_after == "validation" else 0)


def ddp_fit(tmp_path, name, seed):
    script = tmp_path / "run.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(Path('tests').resolve())!r})\n"
                      "from sigverify.cli import main; main(sys.argv[1:])")
    args = ["fit", "--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp_path / "runs"), "--vars.name", name,
            "--data.cache_dir", str(tmp_path / "cache"), *TINY, "--data.num_workers", "0", "--trainer.max_epochs", "2",
            "--data.sampler.batches_per_epoch", "4", "--trainer.strategy", "ddp", "--trainer.devices", "2",
            "--trainer.accelerator", "cpu", "--seed_everything", str(seed)]
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [by_epoch(read_batches(tmp_path / "runs" / name, rank)) for rank in (0, 1)]


@pytest.mark.slow
def test_two_process_ddp_shards_new_batches_every_epoch(tmp_path):
    """Lightning DDP with 2 CPU processes (gloo): each rank its own share of the seed's batches, new
    every epoch; validation metrics see every rank's embeddings."""
    ranks = ddp_fit(tmp_path, "ddp", seed=1)
    metrics = (tmp_path / "runs" / "ddp" / "metrics.csv").read_text().splitlines()
    rows = [dict(zip(metrics[0].split(","), line.split(","))) for line in metrics[1:]]
    n_val = [float(r["val/n_embeddings"]) for r in rows if r.get("val/n_embeddings")]
    split = json.loads((tmp_path / "runs" / "ddp" / "split.json").read_text())
    assert n_val == [len(split["val"]) * 8] * 2  # 4 genuine + 4 forgeries per signer, from both ranks, each epoch
    assert [r for r in rows if r.get("train/n_valid")]  # the epoch-level diagnostics were reduced over ranks
    for epochs in ranks:
        assert len(epochs) == 2 and epochs[0] != epochs[1] and all(len(e) == 2 for e in epochs.values())
    assert ranks[0][0] != ranks[1][0]  # the ranks see different batches

    # What the seed determines: the sampler's own epoch lists, read through the same cache.
    data = SignatureDataModule(synthetic=SyntheticConfig(signers=12, genuine=4, forgeries=4),
                               cache_dir=str(tmp_path / "cache"), preprocess=PreprocessConfig(height=32, width=64),
                               sampler=SamplerConfig(p=4, batches_per_epoch=4), num_workers=0, seed=1)
    data.setup("fit")
    loader = data.train_dataloader()
    images = data.dataset("train").__getitems__(list(range(len(data.dataset("train")))))[0]
    keys = [fingerprint(image) for image in images]
    for epoch in (0, 1):
        expected = [tuple(keys[i] for i in batch) for batch in loader.batch_sampler.epoch_batches(epoch)]
        assert sorted(ranks[0][epoch] + ranks[1][epoch]) == sorted(expected)

    other = ddp_fit(tmp_path, "ddp_seed2", seed=2)
    assert other[0][0] != ranks[0][0]
