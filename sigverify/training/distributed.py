"""Gathering uneven per-rank arrays, so evaluation metrics see every rank's embeddings exactly once."""
from __future__ import annotations

import numpy as np
import torch.distributed as dist


def gather_arrays(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array over all ranks (any lengths); a no-op outside distributed runs."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return arrays
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arrays)
    return tuple(np.concatenate(column) for column in zip(*parts))
