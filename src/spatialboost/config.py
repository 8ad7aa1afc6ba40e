"""Typed dataclass configs with one loading path: YAML -> defaults -> flags -> ``key.sub=value`` overrides ->
validation.

Every config is a (possibly nested) dataclass. ``load_config(Cls, path, overrides, values)`` builds it
(``values``: dotted key -> Python value, what a command's flags set; ``spatialboost.cli.common.
load_command_config`` is how every command calls it); override values are parsed with ``yaml.safe_load``
(never ``eval``), and types are checked against the dataclass field types.
A config class may define ``validate(self) -> None`` that raises ``ConfigError`` for impossible values, and
``RENAMED = {"old_key": "new_key"}`` for keys it still reads under an old name (with a ``FutureWarning``).
``save_config`` writes the resolved config next to an output (atomically). ``packaged_config(name)`` is a
config shipped inside the package (``spatialboost/resources/<name>.yaml``: what commands read at run time,
present in a plain ``pip install``); ``config_path("demo")`` resolves such a name where no file of that name
exists.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
import warnings
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import yaml

from spatialboost.errors import ConfigError
from spatialboost.io import atomic_write_text

__all__ = [
    "ConfigError",
    "config_path",
    "flatten",
    "from_dict",
    "load_config",
    "merge_over",
    "packaged_config",
    "save_config",
    "to_dict",
    "validate_tree",
    "load_yaml_mapping",
]
PACKAGED_CONFIGS = ("demo", "spatialboost", "spatialboost-clip-b16")  # spatialboost/resources/<name>.yaml

C = TypeVar("C")


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> C:
    """Defaults of ``cls``, updated by the YAML file at ``path``, then by ``values`` (dotted key -> a Python
    value, e.g. a command's flags), then by ``key.sub=value`` overrides; validated as a whole."""
    data: dict[str, Any] = {} if path is None else load_yaml_mapping(path)
    for key, value in (values or {}).items():
        _set_dotted(data, key, value)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    cfg = from_dict(cls, data)
    validate_tree(cfg)
    return cfg


def packaged_config(name: str) -> Path:
    """The file of a config shipped inside the package; a missing one means a broken install (raises)."""
    resource = files("spatialboost").joinpath("resources", f"{name}.yaml")
    if not resource.is_file():
        raise FileNotFoundError(
            f"spatialboost/resources/{name}.yaml is missing from the installed package: reinstall spatialboost"
        )
    return Path(str(resource))


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping; ConfigError naming the file when it is missing, not YAML or not a
    mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def config_path(arg: str | Path | None) -> Path | None:
    """A ``--config`` argument as a path: a file, or the name of a packaged config (``demo``)."""
    if arg is None:
        return None
    if not Path(arg).exists() and str(arg) in PACKAGED_CONFIGS:
        return packaged_config(str(arg))
    return Path(arg)


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _renamed(cls, data, where)
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(where + k for k in unknown)}; known: {sorted(where + k for k in fields)}"
        )
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
    return cls(**kwargs)


def _renamed(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` with the old keys ``cls.RENAMED`` lists moved to their new names (a FutureWarning each); a
    section given under both names is merged, the old name's keys on top (an old-style override wins)."""
    renamed = getattr(cls, "RENAMED", {})
    if not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        warnings.warn(f"config key {where}{old} is deprecated: use {where}{new}", FutureWarning, stacklevel=4)
        value = data.pop(old)
        if isinstance(value, dict) and isinstance(data.get(new), dict):
            value = {**data[new], **value}
        data[new] = value
    return data


def merge_over(base: C, partial: Mapping[str, Any] | None, where: str = "") -> C:
    """A copy of ``base`` with the fields ``partial`` names replaced, field by field (a partial section: the
    fields it leaves out keep ``base``'s values). Keys and types are checked as ``from_dict`` checks them."""
    cls = type(base)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(partial or {}) - fields
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(where + k for k in unknown)}; known: {sorted(where + k for k in fields)}"
        )
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in (partial or {}).items()}
    return dataclasses.replace(copy.deepcopy(base), **kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists, Paths strings)."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (write, then rename)."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def validate_tree(cfg: Any) -> None:
    """Call ``validate()`` on ``cfg`` and every nested config dataclass that defines it."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_tree(value)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # already built (a preset given as a value)
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where + ".")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length, a type per position
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)} ({value!r})")
            return tuple(
                _coerce(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(args, value, strict=True))
            )
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: a nested config as dotted keys (empty sections stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
