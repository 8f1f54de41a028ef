"""Linear warm-up then cosine decay, as a multiplier of the base LR, stepped per optimizer step."""
from __future__ import annotations

import math


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, base_lr: float, start_lr: float,
                         min_lr: float) -> float:
    """LR(step) / base_lr: start_lr -> base_lr linearly over warmup_steps, then cosine to min_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return (start_lr + (base_lr - start_lr) * step / warmup_steps) / base_lr
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return (min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))) / base_lr
