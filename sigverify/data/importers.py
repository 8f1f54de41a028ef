"""Importers that write a ``manifest.csv`` for common data set layouts."""
from __future__ import annotations

import re
from dataclasses import dataclass
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


FORGERY_PATTERN = r"(?i)(forg|fake|^f_|_f\d)"  # the folders layout's default: file names of forgeries


def import_folders(root: str | Path, forgery_pattern: str = FORGERY_PATTERN,
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


@dataclass(frozen=True)
class Layout:
    """A public data set's file naming, read from each image's path relative to the root.

    ``pattern`` (matched against the end of the relative path, ``/`` separators) names the groups
    ``signer``, ``kind`` and ``index``; a ``kind`` in ``genuine`` is a genuine signature, any other a
    forgery. Images matching ``ignore`` are left out on purpose; any other image that does not match
    is an error naming the file (a wrong root or a renamed file should not silently shrink the set).
    """

    pattern: str
    genuine: tuple[str, ...]
    signer_prefix: str | None = None  # a group whose value prefixes the signer id (BHSig260's script)
    ignore: str | None = None
    one_of: tuple[str, ...] = ()  # folders that must not be imported together (their writer numbers overlap)


LAYOUTS: dict[str, Layout] = {
    # BHSig260: <signer>/B-S-<signer>-G-01.tif (Bengali) and H-S-... (Hindi); F = skilled forgery.
    # Signer ids B1, H1, ...: both scripts number their signers from 1.
    # Import Bengali/ or Hindi/ alone for per-script figures (published results are per script).
    "bhsig260": Layout(r"(?P<script>[BH])-S-(?P<signer>\d+)-(?P<kind>[GF])-(?P<index>\d+)\.\w+", ("g",),
                       signer_prefix="script"),
    # GPDS (GPDS-960 gray, GPDS-300, GPDS Synthetic): <signer>/c-001-01.jpg genuine, cf-001-01.jpg forgery.
    "gpds": Layout(r"(?P<kind>cf|c)-(?P<signer>\d+)-(?P<index>\d+)\.\w+", ("c",)),
    # MCYT-75 offline: 0002v00.bmp genuine ("verdadera"); 0003_0002f00.bmp: forger 0003 imitating 0002.
    "mcyt75": Layout(r"(?:\d+_)?(?P<signer>\d{4})(?P<kind>[vf])(?P<index>\d+)\.\w+", ("v",)),
    # UTSig: Genuine/<signer>/<n>.tif; Forgery/Skilled/... and Forgery/Simple/... are imitations by other
    # writers, both labelled forgery (drop the Simple rows from the manifest for skilled-only figures).
    # Forgery/Opposite Hand/ (the owner's other hand) is neither: left out.
    "utsig": Layout(r"(?P<kind>Genuine|Forgery/Skilled|Forgery/Simple)/(?P<signer>[^/]+)/(?P<index>\d+)\.\w+",
                    ("genuine",), ignore=r"(?i)Forgery/Opposite[ _]Hand/"),
    # SigComp 2011 offline (Dutch or Chinese; import one language's folder at a time): 001_01.PNG is
    # signer 001's; 0119001_01.PNG is forger 0119 imitating signer 001 (the 7-digit names).
    "sigcomp2011": Layout(r"(?P<kind>\d{4})?(?P<signer>\d{3})_(?P<index>\d+)\.\w+", ("",),
                          one_of=("Dutch", "Chinese")),
}


def import_layout(root: str | Path, layout: str, out: str | Path | None = None) -> Path:
    """Write a manifest for one of :data:`LAYOUTS` (e.g. ``"bhsig260"``) found under ``root``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(sorted(LAYOUTS))}")
    spec, root = LAYOUTS[layout], Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    pattern = re.compile(r"(?:^|/)" + spec.pattern + "$", re.IGNORECASE)  # file names' case varies between copies
    ignore = re.compile(spec.ignore) if spec.ignore else None
    if spec.one_of and sum(any(root.rglob(name)) for name in spec.one_of) > 1:
        raise ValueError(f"{root}: holds more than one of {', '.join(spec.one_of)}, whose writer numbers overlap; "
                         "import each folder on its own")
    records = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        relative = path.relative_to(root).as_posix()
        if path.name.startswith(".") or "__MACOSX" in path.parts:  # archive debris (macOS resource forks)
            continue
        match = pattern.search(relative)
        if match is None:
            if ignore and ignore.search(relative):
                continue
            raise ValueError(f"{path}: does not follow the {layout} naming ({spec.pattern})")
        signer = str(int(match["signer"])) if match["signer"].isdigit() else match["signer"]
        if spec.signer_prefix:
            signer = match[spec.signer_prefix].upper() + signer
        label = GENUINE if (match["kind"] or "").lower() in spec.genuine else FORGERY
        records.append(Record(path.resolve(), signer, label, int(match["index"])))
    return _write(records, Path(out) if out else root / "manifest.csv")


def _write(records: list[Record], out: Path) -> Path:
    if not records:
        raise ValueError(f"no signature images found for {out.parent}")
    out = out.resolve()
    outside = [r.path for r in records if out.parent not in r.path.parents]
    if outside:
        raise ValueError(f"{out}: the manifest must sit in a folder above every image (e.g. {outside[0]})")
    return write_manifest(records, out)
