"""The canonical dataset input: ``manifest.csv`` with columns ``path,signer,label[,index]``.

Paths are relative to the manifest's folder; ``label`` is ``genuine`` or ``forgery``.
"""
from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sigverify.data.errors import DataError, DataProblems
from sigverify.labels import GENUINE, LABELS

REQUIRED_COLUMNS = ("path", "signer", "label")


def signer_order(signer: str) -> tuple:
    """The one sort key of signer ids: part by part between ``:`` separators, numeric parts in number order
    before the others in string order; the whole id breaks ties (``5`` and ``05``).

    Ids read from several manifests (``cedar:12``, see :func:`read_manifests`) thus sort by data set, then as
    their own ids do, so a data set's signers keep the order a run on it alone gives them: signer positions (and
    the reference draws that follow them) must not change when ``data.train_extra`` adds another set."""
    parts = str(signer).split(DATASET_SEPARATOR)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), str(signer)


@dataclass(frozen=True)
class Record:
    """One signature image of a data set."""

    path: Path  # absolute
    signer: str
    label: str
    index: int | None = None

    @property
    def genuine(self) -> bool:
        return self.label == GENUINE


def resolve_manifest(root: str | Path) -> Path:
    """Accept a manifest file or a folder holding ``manifest.csv``."""
    root = Path(root)
    manifest = root / "manifest.csv" if root.is_dir() else root
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    return manifest


DATASET_SEPARATOR = ":"  # "cedar:12": signer 12 of the data set in folder cedar/ (several manifests in one run)


def dataset_name(manifest: Path) -> str:
    """A data set's name in a run over several: its manifest's folder name (the prefix of its signer ids)."""
    return Path(manifest).resolve().parent.name


def read_manifests(roots: str | Path | Sequence[str | Path]) -> list[Record]:
    """The records of one manifest, or of several: then every signer id is prefixed with its data set's
    name (the manifest's folder name, ``cedar:12``), so signers of different data sets never merge."""
    paths = [resolve_manifest(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots)]
    if not paths:
        raise ValueError("data.root is an empty list; give one manifest or several")
    if len(paths) == 1:
        return read_manifest(paths[0])
    seen: dict[str, Path] = {}
    images: dict[Path, Path] = {}
    records = []
    for path in paths:
        name = dataset_name(path)
        if name in seen:
            raise DataError(path, f"its folder name {name!r} is also that of {seen[name]}; data sets in one run "
                                  "are told apart by their folder names, so give each its own folder")
        if DATASET_SEPARATOR in name or not name:
            raise DataError(path, f"its folder name {name!r} cannot name a data set (empty, or with "
                                  f"{DATASET_SEPARATOR!r}); move the manifest into a folder named for its data set")
        seen[name] = path
        for r in read_manifest(path):
            if r.path in images:  # one image in two data sets would be two people, perhaps on both sides of the split
                raise DataError(path, f"lists {r.path}, which {images[r.path]} lists too")
            images[r.path] = path
            records.append(replace(r, signer=f"{name}{DATASET_SEPARATOR}{r.signer}"))
    return records


def dataset_of(signer: str) -> str:
    """The data set part of a signer id read from several manifests (see :func:`read_manifests`)."""
    return signer.split(DATASET_SEPARATOR, 1)[0]


def bare_signer(signer: str) -> str:
    """A signer's id within its own data set (``cedar:12`` -> ``12``; see :func:`read_manifests`)."""
    return str(signer).split(DATASET_SEPARATOR, 1)[-1]


def read_manifest(path: str | Path) -> list[Record]:
    """Parse a manifest; any malformed row raises one :class:`DataProblems` listing them all."""
    path = resolve_manifest(path)
    base = path.parent.resolve()
    records, problems = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)}; expected path,signer,label[,index]")
        for line, row in enumerate(reader, start=2):
            try:
                records.append(_parse_row(row, base))
            except ValueError as err:
                problems.append(DataError(f"{path}:{line}", str(err)))
    if problems:
        raise DataProblems(problems)
    if not records:
        raise DataError(path, "manifest has no rows")
    return records


def _parse_row(row: dict, base: Path) -> Record:
    rel, signer, label = ((row.get(c, "") or "").strip() for c in REQUIRED_COLUMNS)
    if not rel:
        raise ValueError("empty path")
    if not signer:
        raise ValueError(f"empty signer for {rel}")
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} for {rel} (expected one of {', '.join(LABELS)})")
    index = (row.get("index") or "").strip()
    return Record(base / rel, signer, label, int(index) if index.isdigit() else None)


def write_manifest(records: list[Record], path: str | Path) -> Path:
    """Write records with paths relative to the manifest's folder (absolute for images outside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "signer", "label", "index"])
        for r in records:
            image = Path(r.path).resolve()
            rel = image.relative_to(base) if image.is_relative_to(base) else image
            writer.writerow([rel.as_posix(), r.signer, r.label, "" if r.index is None else r.index])
    return path


def signer_warnings(records: list[Record]) -> list[str]:
    """Signers that verification cannot use fully: no forgeries, or fewer than two genuine."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[r.signer][r.label] += 1
    notes = []
    for signer, c in sorted(counts.items()):
        if c[GENUINE] < 2:
            notes.append(f"signer {signer}: {c[GENUINE]} genuine sample(s); needs 2 to form a genuine pair")
        if c["forgery"] == 0:
            notes.append(f"signer {signer}: no forgeries (only random negatives for this signer)")
    return notes


def data_fingerprint(records: list[Record]) -> str:
    """A short hash naming a data set wherever it lies: its signers, labels and image names (the last
    two path parts), sorted. Two runs on the same data have the same fingerprint."""
    lines = sorted(f"{r.signer}\t{r.label}\t{'/'.join(Path(r.path).parts[-2:])}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def summarize(records: list[Record]) -> dict:
    """Signer and image counts, and the spread of images per signer."""
    per_signer = Counter(r.signer for r in records)
    genuine = sum(r.genuine for r in records)
    sizes = sorted(per_signer.values())
    return {
        "signers": len(per_signer),
        "images": len(records),
        "genuine": genuine,
        "forgery": len(records) - genuine,
        "images_per_signer": {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]},
    }
