"""Importers that write a ``manifest.csv`` for common data set layouts."""
from __future__ import annotations

import re
from pathlib import Path

from sigverify.data.manifest import Record, write_manifest
from sigverify.labels import FORGERY, GENUINE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
CEDAR_NAME = re.compile(r"^(original|forgeries)_(\d+)_(\d+)\.\w+$", re.IGNORECASE)


def import_cedar(root: str | Path, out: str | Path | None = None) -> Path:
    """The CEDAR distribution: ``full_org/original_<s>_<n>.png`` and ``full_forg/forgeries_<s>_<n>.png``."""
    root = Path(root)
    records = []
    for folder in ("full_org", "full_forg"):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{root / folder}: folder not found (expected the CEDAR layout full_org/, full_forg/)")
        for path in sorted((root / folder).iterdir()):
            match = CEDAR_NAME.match(path.name)
            if not match:
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    raise ValueError(f"{path}: file name does not follow original_<s>_<n> / forgeries_<s>_<n>")
                continue
            kind, signer, index = match.groups()
            label = GENUINE if kind.lower() == "original" else FORGERY
            records.append(Record(path.resolve(), str(int(signer)), label, int(index)))
    return _write(records, Path(out) if out else root / "manifest.csv")


def import_folders(root: str | Path, forgery_pattern: str = r"(?i)(forg|fake|^f_|_f\d)",
                   out: str | Path | None = None) -> Path:
    """One folder per signer; a file whose name matches ``forgery_pattern`` (a regex) is a forgery.

    The signer id is the folder name. Files that are not images are ignored; every image is kept.
    """
    root = Path(root)
    pattern = re.compile(forgery_pattern)
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for index, path in enumerate(sorted(folder.iterdir()), start=1):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            label = FORGERY if pattern.search(path.name) else GENUINE
            records.append(Record(path.resolve(), folder.name, label, index))
    return _write(records, Path(out) if out else root / "manifest.csv")


def _write(records: list[Record], out: Path) -> Path:
    if not records:
        raise ValueError(f"no signature images found for {out.parent}")
    out = out.resolve()
    outside = [r.path for r in records if out.parent not in r.path.parents]
    if outside:
        raise ValueError(f"{out}: the manifest must sit in a folder above every image (e.g. {outside[0]})")
    return write_manifest(records, out)
