"""A test callback: the memory layout (NCHW or NHWC) of what the network computes in a fit."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


def layout(activations: torch.Tensor) -> str:
    """NHWC or NCHW, read from the strides of activations with several channels and pixels (one channel or one
    pixel fits both layouts)."""
    assert activations.shape[1] > 1 and activations.shape[2] * activations.shape[3] > 1, activations.shape
    if activations.is_contiguous():
        return "NCHW"
    return "NHWC" if activations.is_contiguous(memory_format=torch.channels_last) else "other"


def first_convolution(network: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))


class LayoutRecorder(L.Callback):
    """The layout of the first convolution's output in training steps and in the validation after them (not the
    model summary's forward pass, before the training starts), written to ``<default_root_dir>/layouts.json`` for
    the test to read once ``sigverify fit`` returns."""

    def on_train_start(self, trainer, pl_module):
        self.seen: dict[str, str] = {}

        def record(module, inputs, output):
            self.seen.setdefault("train" if pl_module.training else "validate", layout(output))

        first_convolution(pl_module.embedder).register_forward_hook(record)

    def on_fit_end(self, trainer, pl_module):
        Path(trainer.default_root_dir, "layouts.json").write_text(json.dumps(self.seen))
