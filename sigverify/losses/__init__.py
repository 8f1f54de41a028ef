"""Loss registry: ``create_loss("lsc_plus", mu=0.5)``. A name in a config is all it takes to swap."""
from __future__ import annotations

import inspect
import warnings

from sigverify.losses.base import LossOutput, MetricLoss
from sigverify.losses.co_tuplet import CoTupletLoss
from sigverify.losses.lsc_plus import LSCPlusLoss
from sigverify.losses.sct import SCTLoss
from sigverify.losses.supcon import SupConLoss
from sigverify.losses.triplet_hard import BatchHardTripletLoss
from sigverify.losses.triplet_semihard import BatchSemiHardTripletLoss

LOSSES: dict[str, type[MetricLoss]] = {
    "triplet_hard": BatchHardTripletLoss,
    "triplet_semihard": BatchSemiHardTripletLoss,
    "sct": SCTLoss,
    "lsc_plus": LSCPlusLoss,
    "supcon": SupConLoss,
    "co_tuplet": CoTupletLoss,
}


# Arguments renamed since runs were saved: the old name, its new name and how its values map. Checkpoints keep
# the loss arguments they were trained with, and `--ckpt_path` rebuilds the loss from them.
RENAMED_ARGUMENTS = {"lsc_plus": {"pull_on": ("pull_positives", {"easiest": "easy", "hardest": "hard", "all": "all"})}}


def create_loss(name: str, **kwargs) -> MetricLoss:
    """Build a registered loss; unknown names or arguments get an error listing the valid ones."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid choices: {', '.join(sorted(LOSSES))}")
    for old, (new, values) in RENAMED_ARGUMENTS.get(name, {}).items():
        if old in kwargs:
            warnings.warn(f"loss {name!r}: {old} is now {new} ({old}: {kwargs[old]} -> {new}: "
                          f"{values.get(kwargs[old], kwargs[old])})", DeprecationWarning, stacklevel=2)
            value = kwargs.pop(old)
            kwargs[new] = values.get(value, value)
    cls = LOSSES[name]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"loss {name!r} got unknown argument(s) {unknown}; valid: {', '.join(params)}")
    return cls(**kwargs)


__all__ = ["LOSSES", "LossOutput", "MetricLoss", "create_loss"]
