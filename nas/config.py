"""Run configurations: YAML -> dataclass, CLI flags override, resolved config saved with a run.

Every CLI that runs something (search, train) has one dataclass of settings. A YAML file
(``--config FILE``) is read with ``yaml.safe_load``; its keys equal the dataclass fields,
unknown keys are an error that lists the valid ones; flags given on the command line override
the file; presets are named partial configs applied first.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the source and key."""


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        items = [_coerce(v, args[0] if args else Any, key, source) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key} must be {tp.__name__}, got {value!r}") from None
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], source: str, base: T | None = None) -> T:
    """Build ``cls`` from ``data`` on top of ``base`` (defaults when None)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    values = {k: _coerce(v, hints[k], k, source) for k, v in data.items()}
    return dataclasses.replace(base if base is not None else cls(), **values)  # type: ignore[type-var]


CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
"""The shipped configurations (package data, ``nas/configs/*.yaml``)."""


def shipped_configs() -> list[str]:
    """Names of the shipped configurations (``--config search-real`` takes them bare)."""
    return sorted(f.stem for f in CONFIGS_DIR.glob("*.yaml"))


def config_path(path: str | Path) -> Path:
    """The file of ``--config path``: the path itself when it is a file, else the shipped
    configuration of that name (``search-real``, ``search-real.yaml`` or the former
    ``configs/search-real.yaml`` all name ``nas/configs/search-real.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = CONFIGS_DIR / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml")
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"config file not found: {p}; shipped configs: {shipped_configs()}")


def load_yaml_config(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """``from_mapping`` of a YAML file (or a shipped configuration's name, :func:`config_path`)."""
    p = config_path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return from_mapping(cls, data, str(p), base)


def resolve(
    cls: type[T],
    args: argparse.Namespace,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    base: T | None = None,
) -> T:
    """Defaults (or ``base``) <- preset <- YAML (``args.config``) <- ``--set KEY=VALUE``
    (``args.set``: pairs) <- flags set on the CLI.

    Flags are the namespace entries that are fields of ``cls`` and not None (CLIs use
    ``default=None`` for every overridable flag so unset flags do not mask the file).
    """
    cfg = base if base is not None else cls()
    preset = getattr(args, "preset", None)
    if preset:
        if not presets or preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {sorted(presets or {})}")
        cfg = from_mapping(cls, presets[preset], f"preset {preset!r}", cfg)
    if getattr(args, "config", None):
        cfg = load_yaml_config(cls, args.config, cfg)
    if getattr(args, "set", None):
        cfg = from_mapping(cls, dict(args.set), "--set", cfg)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    flags = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return from_mapping(cls, flags, "command line", cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-YAML-friendly dict of a config dataclass (tuples as lists)."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
