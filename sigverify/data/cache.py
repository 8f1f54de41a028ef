"""A compact cache of preprocessed images, built once per (data set, preprocessing settings).

The key hashes the settings and every file's path, label, size and modification time, so a
changed source or setting builds a new cache and an unchanged one is reused. Images live in
one uint8 ``.npy`` file that training workers memory-map instead of decoding PNGs every step.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sigverify.data.errors import DataError, DataProblems
from sigverify.data.manifest import Record
from sigverify.data.preprocess import PreprocessConfig, preprocess_file

log = logging.getLogger(__name__)
ON_BAD = ("raise", "skip")


def default_cache_root() -> Path:
    return Path(os.environ.get("SIGVERIFY_CACHE", Path.home() / ".cache" / "sigverify"))


@dataclass
class PreparedData:
    """Preprocessed images aligned with their records; ``skipped`` lists files left out."""

    images: np.ndarray  # uint8 [N, H, W], memory-mapped
    records: list[Record]
    skipped: list[DataError]
    path: Path
    reused: bool


def cache_key(records: list[Record], config: PreprocessConfig) -> str:
    digest = hashlib.sha256(config.fingerprint().encode())
    for r in records:
        try:
            stat = r.path.stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{r.path}|{r.signer}|{r.label}|{stamp}\n".encode())
    return digest.hexdigest()[:24]


def prepare(
    records: list[Record],
    config: PreprocessConfig,
    cache_root: str | Path | None = None,
    on_bad: str = "raise",
    workers: int = 0,
) -> PreparedData:
    """Return the cached preprocessed images for ``records``, building the cache if needed.

    Every file is checked while building; bad files are all reported, then the build either
    stops (``on_bad="raise"``, nothing is written) or leaves them out with a warning each.
    """
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    folder = Path(cache_root or default_cache_root()) / cache_key(records, config)
    if (folder / "index.json").is_file():
        prepared = _load(folder, records, reused=True)
        if prepared.skipped and on_bad == "raise":
            raise DataProblems(prepared.skipped)
        _warn_skipped(prepared.skipped)
        return prepared
    images, problems = _preprocess_all(records, config, workers)
    if problems and on_bad == "raise":
        raise DataProblems(problems)
    _warn_skipped(problems)
    _write(folder, images, records, problems, config)
    return _load(folder, records, reused=False)


def _preprocess_all(records, config, workers):
    paths = [r.path for r in records]
    if workers and workers > 1 and len(paths) > 64:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_safe_preprocess, paths, [config] * len(paths), chunksize=32))
    else:
        results = [_safe_preprocess(p, config) for p in paths]
    problems = [r for r in results if isinstance(r, DataError)]
    images = [r if not isinstance(r, DataError) else None for r in results]
    return images, problems


def _safe_preprocess(path: Path, config: PreprocessConfig):
    try:
        return preprocess_file(path, config)
    except DataError as err:
        return err


def _write(folder: Path, images, records, problems, config) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    kept = [img for img in images if img is not None]
    stack = np.stack(kept) if kept else np.zeros((0, config.height, config.width), np.uint8)
    np.save(tmp / "images.npy", stack)
    index = {
        "paths": [str(r.path) for r, img in zip(records, images) if img is not None],
        "skipped": [{"path": p.path, "problem": p.problem} for p in problems],
        "preprocess": config.__dict__,
    }
    (tmp / "index.json").write_text(json.dumps(index))
    try:
        tmp.rename(folder)  # atomic: readers never see a half-written cache
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path, records: list[Record], reused: bool) -> PreparedData:
    index = json.loads((folder / "index.json").read_text())
    by_path = {str(r.path): r for r in records}
    kept = [by_path[p] for p in index["paths"]]
    skipped = [DataError(s["path"], s["problem"]) for s in index["skipped"]]
    images = np.load(folder / "images.npy", mmap_mode="r")
    if reused:
        log.info("reusing preprocessed cache %s (%d images)", folder, len(kept))
    return PreparedData(images, kept, skipped, folder, reused)


def _warn_skipped(problems: list[DataError]) -> None:
    for p in problems:
        log.warning("skipping bad file %s", p)
