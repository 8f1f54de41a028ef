"""Config files: YAML composed from a ``defaults:`` list (paths relative to the file), then
resolved with OmegaConf interpolation (``${trainer.default_root_dir}``, ``${oc.env:VAR,default}``).

An experiment file names its base in ``defaults`` and states only what differs. A top-level
``vars:`` mapping holds values shared by interpolation (run name, patience, ...); it is dropped
after resolution. A top-level ``sweep:`` mapping holds what ``sigverify sweep`` and the accuracy
benchmark read from a preset (``sweep.ensemble``: losses whose models are scored together;
``sweep.ensemble_seeds``: how many models of each); a single run never sees it. Several files
compose in order, later ones overriding earlier ones.
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def load_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> DictConfig:
    """The composed, unresolved config of ``path``: its defaults merged in order, then the file."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"{path}: defaults form a cycle ({' -> '.join(p.name for p in _seen)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    own = OmegaConf.load(path)
    if not isinstance(own, DictConfig):
        raise ValueError(f"{path}: a config file must hold a mapping")
    own = current_names(own, path)
    bases = own.pop("defaults", []) or []
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, load_config(path.parent / str(base), (*_seen, path)))
    return OmegaConf.merge(merged, own)


def compose(*paths: str | Path, overrides: list[str] = ()) -> str:
    """The configs of ``paths`` merged in order, then ``overrides`` (``key=value`` dotlist), resolved,
    without ``vars`` and ``sweep``, as YAML text."""
    config = OmegaConf.merge(*(load_config(p) for p in paths), OmegaConf.from_dotlist(list(overrides)))
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception as err:  # omegaconf's interpolation errors name the key
        raise ValueError(f"{', '.join(map(str, paths))}: {err}") from err
    for section in ("vars", "sweep"):
        resolved.pop(section, None)
    return OmegaConf.to_yaml(OmegaConf.create(resolved))


# Settings that moved to the room that owns them (issue #25): what embeds a test (the models'), what explains
# it (the report's), apart from how it is scored (evaluation's). Old config files, command lines and
# checkpoints keep working; config files and command lines are told the new name.
MOVED_SETTINGS = {
    "model.evaluation.features": "model.inference.features",
    "model.evaluation.tta_shift": "model.inference.tta_shift",
    "model.evaluation.ensemble": "model.inference.ensemble",
    "model.evaluation.explain": "report.explain.maps",
    "model.evaluation.explain_sample": "report.explain.sample",
    "model.evaluation.explain_method": "report.explain.method",
}


def current_names(own: DictConfig, path: Path) -> DictConfig:
    """One file's settings under today's names, before it is merged with others (so file order still decides)."""
    tree = OmegaConf.to_container(own, resolve=False)
    moved = move_settings(tree)
    if not moved:
        return own
    log.warning(moved_warning(moved, str(path)))
    return OmegaConf.create(tree)


def move_settings(tree: dict) -> list[str]:
    """Moves the settings of ``tree`` (a nested mapping, changed in place) that sit under an old name of
    ``MOVED_SETTINGS`` to the new one, and returns the old names found. Within one file, command line or
    checkpoint an old name wins over a new one beside it (it can only be the user's own)."""
    found = []
    for old, new in MOVED_SETTINGS.items():
        *parents, leaf = old.split(".")
        holder = tree
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or leaf not in holder:
            continue
        value = holder.pop(leaf)
        *new_parents, new_leaf = new.split(".")
        target = tree
        for key in new_parents:
            target = target.setdefault(key, {})
        target[new_leaf] = value
        found.append(old)
    return found


def moved_warning(old_names: list[str], where: str) -> str:
    return f"{where}: " + "; ".join(f"{old} is now {MOVED_SETTINGS[old]}" for old in old_names)
