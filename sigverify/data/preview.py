"""``sigverify data preview``: one real training batch, augmented, as the model receives it.

    sigverify data preview --config configs/lsc_plus.yaml --config configs/presets/cedar_cpu.yaml \
        --data.root ../data/cedar/manifest.csv --out batch.png [--epoch 0] [--batch 0]

The data module is built from the same composed config as ``sigverify fit`` (any ``--data.*`` and
``--seed_everything`` override works), so the picture shows exactly what training would draw: a
row per signer of the PKFM batch, columns for its K genuine signatures, F skilled forgeries and M
other signers' signatures, each labelled.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import yaml

from sigverify.commandline import command_parser
from sigverify.config import compose


def preview_parser() -> argparse.ArgumentParser:
    parser = command_parser("sigverify data preview", __doc__, raw=True)
    parser.add_argument("--config", action="append", required=True, help="config files, composed in order as for fit")
    parser.add_argument("--out", default="batch.png", help="PNG to write")
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0, help="which batch of the epoch")
    parser.add_argument("--seed_everything", type=int, default=None, help="the run's seed (default: the config's)")
    return parser


def data_module_from_config(configs: list[str], overrides: list[str]):
    """The ``SignatureDataModule`` that ``sigverify fit`` would build from these configs and
    ``data.*`` overrides (``key=value``), typed and checked the same way (jsonargparse)."""
    from jsonargparse import ArgumentParser

    from sigverify.data.datamodule import SignatureDataModule

    composed = yaml.safe_load(compose(*configs, overrides=overrides))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SignatureDataModule, "data")
    namespace = parser.parse_object({"data": composed.get("data") or {}})
    return parser.instantiate_classes(namespace).data, composed.get("seed_everything")


def run_preview(argv: list[str]) -> int:
    args, rest = preview_parser().parse_known_args(argv)
    overrides = _data_overrides(rest)
    data, config_seed = data_module_from_config(args.config, overrides)
    seed = args.seed_everything if args.seed_everything is not None else config_seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        os.environ["PL_GLOBAL_SEED"] = str(seed)  # what seed_everything does for a fit
    data.num_workers = 0
    data.setup("fit")
    loader = data.train_dataloader()
    sampler = loader.batch_sampler
    if not 0 <= args.batch < len(sampler):
        raise ValueError(f"--batch must lie in [0, {len(sampler)}), the batches of an epoch")
    sampler.set_epoch(args.epoch)
    if loader.dataset.transform is not None:
        loader.dataset.transform.set_random_seed(sampler.seed)  # the same picture for the same seed
    positions = sampler.epoch_batches(args.epoch)[args.batch]
    images, signers, genuine = loader.dataset.__getitems__(positions)
    title = (f"training batch {args.batch} of epoch {args.epoch}, seed {sampler.seed}: P={sampler.p} signers x "
             f"(K={sampler.k} genuine + F={sampler.f} forgeries + M={sampler.m} others), "
             f"{'augmented' if data.augment.enabled else 'no augmentation'}, 1x{images.shape[2]}x{images.shape[3]}")
    path = plot_batch(images[:, 0].numpy(), signers.numpy(), genuine.numpy(), data.signer_names,
                      sampler.k + sampler.f + sampler.m, title, Path(args.out))
    print(f"wrote {path}")
    return 0


def _data_overrides(rest: list[str]) -> list[str]:
    """``--data.key value`` / ``--data.key=value`` pairs as a dotlist; anything else is refused."""
    overrides, items = [], iter(rest)
    for arg in items:
        key, has_value, value = arg.partition("=")
        if not key.startswith("--data."):
            raise ValueError(f"sigverify data preview: unknown argument {arg!r} (only --data.* overrides)")
        if not has_value:
            value = next(items, None)
            if value is None:
                raise ValueError(f"{key} needs a value")
        overrides.append(f"{key[2:]}={value}")
    return overrides


def plot_batch(images: np.ndarray, signers: np.ndarray, genuine: np.ndarray, names: list[str], group: int,
               title: str, path: Path) -> Path:
    """A grid: one row per PKFM group (its anchor signer), one column per slot, each tile labelled
    with its signer and role (genuine of the row's signer, its skilled forgery, or another signer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sigverify.evaluation.figure import save_figure

    rows = len(images) // group
    height, width = images.shape[1:]
    fig, axes = plt.subplots(rows, group, figsize=(group * 1.9 * width / max(width, height) + 0.6, rows * 1.25 + 0.7),
                             squeeze=False)
    for r in range(rows):
        anchor = signers[r * group]
        for c in range(group):
            i = r * group + c
            same = signers[i] == anchor
            role, colour = (("genuine", "tab:green") if genuine[i] else ("skilled forgery", "tab:red")) if same \
                else ("other signer", "tab:blue")
            ax = axes[r][c]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colour), spine.set_linewidth(2)
            ax.set_title(f"{names[signers[i]]}: {role}", fontsize=7, color=colour, pad=2)
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)
