"""A map-style dataset over the preprocessed cache: (image uint8 [1, H, W], signer id, is genuine)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class SignatureDataset(Dataset):
    def __init__(self, images: np.ndarray, signers: np.ndarray, genuine: np.ndarray, positions: np.ndarray,
                 transform=None):
        self.images = images  # shared, memory-mapped cache
        self.positions = np.asarray(positions)  # rows of the cache that belong to this split
        self.signers = np.asarray(signers)[self.positions]
        self.genuine = np.asarray(genuine, dtype=bool)[self.positions]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        image = np.array(self.images[self.positions[i]])  # a private, writable copy of the cached row
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        # uint8 all the way to the device: 4x less to copy than float; normalised on the device.
        return torch.from_numpy(np.ascontiguousarray(image))[None], int(self.signers[i]), bool(self.genuine[i])

    def __getitems__(self, indices: list[int]):
        """A whole batch (the DataLoader passes the batch's indices): one gather from the memory-mapped
        cache instead of a copy and a collate per image (with one loader worker on 2 CPU cores, that took
        the predict path from 0.70 to 1.00 of bare inference speed)."""
        indices = np.asarray(indices, dtype=np.int64)
        images = np.asarray(self.images[self.positions[indices]])
        if self.transform is not None:
            images = np.stack([self.transform(image=image)["image"] for image in images])
        return (torch.from_numpy(np.ascontiguousarray(images))[:, None], torch.from_numpy(self.signers[indices]).long(),
                torch.from_numpy(self.genuine[indices]))


def keep_batch(batch):
    """The loaders' collate_fn: :meth:`SignatureDataset.__getitems__` already returns a collated batch."""
    return batch


def seed_worker_augmentation(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream (forked workers would share one)."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if transform is not None:
        transform.set_random_seed(int(torch.initial_seed() % 2**31))
