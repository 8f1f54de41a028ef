"""A test callback: what each training batch holds, as the training step receives it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


def fingerprint(image) -> str:
    """One image, one key (with augmentation off, the same dataset index always gives the same key)."""
    return hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest()[:16]


class BatchRecorder(L.Callback):
    """Records every training batch (epoch, index, rank, image keys, signers, genuine flags) in
    ``batches`` and in ``<default_root_dir>/batches-rank<r>.jsonl``, so runs in other processes
    (the CLI, DDP ranks) can be read back."""

    def __init__(self):
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, signers, genuine = batch
        record = {"epoch": trainer.current_epoch, "batch": batch_idx, "rank": trainer.global_rank,
                  "images": [fingerprint(image) for image in images], "signers": signers.tolist(),
                  "genuine": genuine.tolist()}
        self.batches.append(record)
        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"batches-rank{trainer.global_rank}.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_batches(run_dir, rank: int = 0) -> list[dict]:
    lines = (Path(run_dir) / f"batches-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def by_epoch(batches: list[dict]) -> dict[int, list[tuple]]:
    epochs: dict[int, list[tuple]] = {}
    for b in batches:
        epochs.setdefault(b["epoch"], []).append(tuple(b["images"]))
    return epochs
