"""Config files: YAML composed from a ``defaults:`` list (paths relative to the file), then
resolved with OmegaConf interpolation (``${trainer.default_root_dir}``, ``${oc.env:VAR,default}``).

An experiment file names its base in ``defaults`` and states only what differs. A top-level
``vars:`` mapping holds values shared by interpolation (run name, patience, ...); it is dropped
after resolution. A top-level ``sweep:`` mapping holds what ``sigverify sweep`` and the accuracy
benchmark read from a preset (``sweep.ensemble``: losses whose models are scored together); a
single run never sees it. Several files compose in order, later ones overriding earlier ones.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


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
