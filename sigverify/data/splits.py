"""Signer-disjoint train/val/test splits: by ratios, by explicit lists, or k-fold over signers.

A split never divides one signer's images. It is seeded and written as ``split.json`` beside
each run, and a saved split can be given back (``mode: file``) to repeat a run exactly.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sigverify.data.manifest import DATASET_SEPARATOR, bare_signer, signer_order

MODES = ("ratios", "lists", "kfold", "file")
VAL_FROM = ("next_fold", "front")


@dataclass  # not frozen: Lightning walks hyperparameters and refuses frozen dataclasses
class SplitConfig:
    mode: str = "ratios"
    seed: int = 42
    test_ratio: float = 0.2  # of all signers (the write-up: 20 %)
    val_ratio: float = 0.1  # of the signers left after the test split (the write-up: 10 %)
    min_val: int = 8  # at least this many validation signers (the threshold is fixed on them), but
    #                   never more than half of the signers left after the test split
    folds: int = 5  # kfold: test signers are fold ``fold`` of ``folds``
    fold: int = 0
    # kfold: where the validation signers come from. ``next_fold``: the next fold's test signers first, so they
    # rotate with the fold (5 folds of 8 validate on 40 signers). ``front``: the front of the permutation, as
    # runs fitted before 2026-12-06 drew them; every fold then validated on nearly the same 8-10 signers.
    val_from: str = "next_fold"
    train: list[str] = field(default_factory=list)  # lists: explicit signer ids
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    file: str | None = None  # file: a split.json written by an earlier run


def make_split(signers: list[str], config: SplitConfig, datasets: dict[str, str] | None = None,
               train_only: Sequence[str] = ()) -> dict[str, list[str]]:
    """Return {"train", "val", "test"}: disjoint, sorted signer lists covering ``signers``.

    ``datasets`` (signer -> data set name), for a run over several data sets: the ratio and k-fold
    splits are then made within each data set and joined, so every data set has its share of
    training, validation and test signers (and fold ``fold`` of each is tested). The data sets named
    in ``train_only`` give all their signers to training instead (``data.train_extra``); the
    ``lists`` and ``file`` modes place every signer themselves.
    """
    if config.mode not in MODES:
        raise ValueError(f"split mode must be one of {MODES}, got {config.mode!r}")
    signers = sorted(set(signers), key=signer_order)
    if config.mode in ("lists", "file"):
        split = _listed(signers, config)
        if train_only and datasets:
            split = _all_train(split, [s for s in signers if datasets[s] in train_only], train_only, datasets)
    elif datasets and len(set(datasets.values())) > 1:
        names = sorted(set(datasets.values()))
        check_train_only(train_only, names)
        split = {"train": [], "val": [], "test": []}
        for name in names:
            if name in train_only:
                split["train"] += [s for s in signers if datasets[s] == name]
                continue
            # Each data set is split on its own ids, exactly as a run on it alone would split it: a model
            # trained on several data sets never trained on the test signers of one of them alone.
            own = {bare_signer(s): s for s in signers if datasets[s] == name}
            try:
                part = _random_split(sorted(own, key=signer_order), config)
            except ValueError as err:
                raise ValueError(f"data set {name!r}: {err}") from err
            for key in split:
                split[key] += [own[s] for s in part[key]]
    else:
        split = _random_split(signers, config)
    return {k: sorted((str(s) for s in v), key=signer_order) for k, v in split.items()}  # plain str: checkpoints hold them


def _listed(signers: list[str], config: SplitConfig) -> dict[str, list[str]]:
    """The split the ``lists`` mode names, or the one a ``file`` holds."""
    if config.mode == "lists":
        return _from_lists(signers, config.train, config.val, config.test)
    if not config.file:
        raise ValueError("split mode 'file' needs split.file")
    saved = json.loads(Path(config.file).read_text())
    return _from_lists(signers, saved["train"], saved["val"], saved["test"])


def _all_train(split: dict[str, list[str]], extra: list[str], train_only: Sequence[str],
               datasets: dict[str, str]) -> dict[str, list[str]]:
    """A listed split with every signer of the training-only data sets in training, none elsewhere."""
    check_train_only(train_only, sorted(set(datasets.values())))
    misplaced = sorted(set(split["val"] + split["test"]) & set(extra))
    if misplaced:
        raise ValueError(f"the split lists signers of training-only data sets (data.train_extra) for validation "
                         f"or test: {misplaced[:10]}")
    listed = set(split["train"])
    return {**split, "train": split["train"] + [s for s in extra if s not in listed]}


def check_train_only(train_only: Sequence[str], names: Sequence[str]) -> None:
    unknown = sorted(set(train_only) - set(names))
    if unknown:
        raise ValueError(f"training-only data sets {unknown} are not among the run's data sets {list(names)}")
    if set(names) <= set(train_only):
        raise ValueError(f"every data set of the run ({', '.join(names)}) is training-only: none is left for "
                         "validation and test signers (data.root gives those; data.train_extra only adds training signers)")


def stored_val_from(stored) -> str | None:
    """How a checkpoint's k-fold split (its settings as stored: a mapping or a pickled SplitConfig) drew its
    validation signers; settings written before ``val_from`` existed drew them from the permutation's front.
    None for other split modes."""
    settings = vars(stored) if isinstance(stored, SplitConfig) else stored
    if not isinstance(settings, dict) or settings.get("mode") != "kfold":
        return None
    return settings.get("val_from", "front")


def _random_split(signers: list[str], config: SplitConfig) -> dict[str, list[str]]:
    order = list(np.random.default_rng(config.seed).permutation(signers))
    if config.mode == "kfold":
        if not 0 <= config.fold < config.folds or config.folds < 2:
            raise ValueError(f"kfold needs 0 <= fold < folds and folds >= 2, got fold={config.fold}, folds={config.folds}")
        if config.val_from not in VAL_FROM:
            raise ValueError(f"split.val_from must be one of {VAL_FROM}, got {config.val_from!r}")
        if len(signers) < config.folds:
            raise ValueError(f"{len(signers)} signers cannot make {config.folds} folds")
        test = [s for i, s in enumerate(order) if i % config.folds == config.fold]
    else:
        test = order[: int(round(config.test_ratio * len(order)))]
    tested = set(test)
    rest = [s for s in order if s not in tested]
    if config.mode == "kfold" and config.val_from == "next_fold":
        # The next fold's test signers first, then the fold after it, ... (each in permutation order).
        position = {s: i for i, s in enumerate(order)}
        rest.sort(key=lambda s: ((position[s] % config.folds - config.fold - 1) % config.folds, position[s]))
    n_val = int(config.val_ratio * len(rest))
    if config.val_ratio > 0:
        # 10 % of CEDAR's 44 signers is 4: too few to fix a threshold on (one signer moves it a lot).
        n_val = max(1, n_val, min(config.min_val, len(rest) // 2))
    split = {"train": rest[n_val:], "val": rest[:n_val], "test": test}
    if not split["train"]:
        raise ValueError(f"split leaves no training signers ({len(signers)} signers in all)")
    return split


def _from_lists(signers, train, val, test) -> dict[str, list[str]]:
    split = {"train": [str(s) for s in train], "val": [str(s) for s in val], "test": [str(s) for s in test]}
    known = set(signers)
    for name, part in split.items():
        unknown = sorted(set(part) - known)
        if unknown:
            raise ValueError(f"split.{name} names signers not in the data: {unknown[:10]}")
    seen: dict[str, str] = {}
    for name, part in split.items():
        for s in part:
            if s in seen:
                raise ValueError(f"signer {s} is in both split.{seen[s]} and split.{name}")
            seen[s] = name
    if not split["train"]:
        split["train"] = [s for s in signers if s not in seen]
    return split


def save_split(split: dict[str, list[str]], path: str | Path, config: SplitConfig) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**split, "config": {"mode": config.mode, "seed": config.seed, "test_ratio": config.test_ratio,
                                   "val_ratio": config.val_ratio, "min_val": config.min_val, "folds": config.folds,
                                   "fold": config.fold, "val_from": config.val_from}}
    path.write_text(json.dumps(payload, indent=1))
    return path


SPLIT_KEY = "signer_split"  # the checkpoint entry holding a model's split_record


def split_record(split: dict[str, list[str]], data: str, datasets: dict[str, str] | None = None) -> dict:
    """What a checkpoint stores about the signers its model saw: the data set's fingerprint and the split;
    for a run over several data sets also each one's own fingerprint (``datasets``: name -> fingerprint),
    so a later run on one of them alone is checked against the signers it had there."""
    record = {"data": data, **{part: list(split[part]) for part in ("train", "val", "test")}}
    if datasets:
        record["datasets"] = dict(datasets)
    return record


def _views(record: dict) -> list[tuple[str, dict[str, set[str]]]]:
    """(fingerprint, {part: signer ids}) of a record as a whole and, for several data sets, of each one
    with its own (unprefixed) ids."""
    parts = ("train", "val", "test")
    views = [(record.get("data"), {p: set(record.get(p, [])) for p in parts})]
    for name, fingerprint in (record.get("datasets") or {}).items():
        prefix = f"{name}{DATASET_SEPARATOR}"
        views.append((fingerprint, {p: {s[len(prefix):] for s in record.get(p, []) if s.startswith(prefix)}
                                    for p in parts}))
    return views


def same_validation_signers(trained: dict, rebuilt: dict) -> bool:
    """Whether data rebuilt from a checkpoint (its ``rebuilt`` split record) is what it trained with: each
    data set of it, by fingerprint, with the validation signers the model had there (its training-only
    data sets need not be rebuilt)."""
    if trained.get("data") is None:  # a record without the data's fingerprint: the signers alone
        return set(trained["val"]) == set(rebuilt["val"])
    theirs, ours = _views(trained), _views(rebuilt)
    # Every data set the model was validated or tested on, none missing and none added; one alone is the whole.
    needed = {fp: view["val"] for fp, view in (theirs[1:] or theirs) if view["val"] or view["test"]}
    return {fp: view["val"] for fp, view in (ours[1:] or ours)} == needed


def refuse_seen_signers(record: dict | None, this_run: dict, source: str, allow: bool = False) -> None:
    """Refuse a model (an ensemble member, an ``init_from`` checkpoint, a checkpoint tested under
    another split) that trained on, or chose its checkpoint with, signers this run validates or tests
    on: its scores for them would be optimistic.

    ``record``: the model's :func:`split_record`, with ``init`` the record of the model it was
    initialised from, if any (checked too); ``None`` for checkpoints that predate the record.
    ``this_run``: this run's. ``allow`` turns the refusal into a warning, for deliberate use.
    """
    if record is None:
        _refuse(f"{source} does not record which signers it was trained on (saved before sigverify stored splits)",
                allow)
        return
    # The same data set on both sides, as a whole or as one of several (signer ids compared within it).
    same = [(theirs, ours) for fp, theirs in _views(record) for fp2, ours in _views(this_run) if fp == fp2]
    overlap = sorted({s for theirs, ours in same for s in _seen(theirs, ours)}, key=signer_order)
    if overlap:
        _refuse(f"{source} was trained or validated on {len(overlap)} of this run's validation/test signers "
                f"({_names(overlap)})", allow)
    elif not same:
        names = _seen(_views(record)[0][1], _views(this_run)[0][1])
        if names:  # another data set, or the same one re-imported or with images added or skipped
            warnings.warn(f"{source} was trained on another data set (fingerprint {record.get('data')} vs "
                          f"{this_run['data']}) whose signer names include {len(names)} of this run's "
                          f"validation/test signers ({_names(names)}); if it is the same data, its scores for "
                          "them are optimistic")
    if record.get("init"):
        refuse_seen_signers(record["init"], this_run, f"{source} (through the model it was initialised from)", allow)


def _seen(theirs: dict[str, set[str]], ours: dict[str, set[str]]) -> list[str]:
    """Trained on this run's validation or test signers, or chose its checkpoint on this run's test
    signers. (Validated on this run's validation signers is fine: the same split does that.)"""
    overlap = (theirs["train"] & (ours["val"] | ours["test"])) | (theirs["val"] & ours["test"])
    return sorted(overlap, key=signer_order)


def _names(signers: list[str]) -> str:
    return ", ".join(signers[:10]) + (", ..." if len(signers) > 10 else "")


def _refuse(problem: str, allow: bool) -> None:
    message = f"{problem}; its scores for those signers would be optimistic"
    if allow:
        warnings.warn(message + " (allowed by model.allow_seen_signers)")
        return
    raise ValueError(message + ". Use a model trained on this run's split, or set model.allow_seen_signers "
                     "true if this is deliberate.")
