"""Method configs from a YAML file plus ``key=value`` overrides, as ``mmalign train`` takes them.

One dataclass per method is the single source of truth: the YAML keys, the overrides and the
Python keyword arguments are its field names, so ``RAFTConfig(learning_rate=1e-4)``,
``learning_rate: 1e-4`` in a file and ``learning_rate=1e-4`` on the command line mean the same.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path

import yaml

from .errors import InvalidInputError


def field_names(config_class) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class)]


def unknown_key_error(key: str, config_class, where: str) -> InvalidInputError:
    names = field_names(config_class)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(names)}."
    return InvalidInputError(f"{where}: {config_class.__name__} has no key {key!r}.{hint}")


def parse_overrides(overrides: list[str]) -> dict:
    """``["learning_rate=1e-4", "use_lora=false"]`` → ``{"learning_rate": 1e-4, "use_lora": False}``;
    values are parsed as YAML scalars or lists."""
    values = {}
    for item in overrides:
        key, separator, raw = item.partition("=")
        if not separator or not key.strip():
            raise InvalidInputError(f"override {item!r}: write overrides as key=value, for example learning_rate=1e-4.")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise InvalidInputError(f"override {item!r}: the value is not valid YAML ({error}).") from error
    return values


def read_yaml(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"--config: {str(path)!r} is not a file.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InvalidInputError(f"--config: {path} is not valid YAML ({error}).") from error
    if not isinstance(values, dict):
        raise InvalidInputError(f"--config: {path} must hold a mapping of config keys, got a {type(values).__name__}.")
    return values


def _is_number(value) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_types(config_class, values: dict, where: str) -> dict:
    """Coerce ints and numeric strings to floats where a float is declared; refuse values of the wrong kind."""
    hints = typing.get_type_hints(config_class)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise unknown_key_error(key, config_class, where)
        allowed = typing.get_args(hints[key]) or (hints[key],)
        allowed = tuple(typing.get_origin(kind) or kind for kind in allowed)
        if value is None and type(None) in allowed:
            checked[key] = value
        elif float in allowed and isinstance(value, (int, str)) and not isinstance(value, bool) and _is_number(value):
            checked[key] = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        elif not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join(kind.__name__ for kind in allowed)
            raise InvalidInputError(f"{where}: {key} must be {names}, got {value!r}.")
        else:
            checked[key] = value
    return checked


def load_config(config_class, path: str | Path | None = None, overrides: list[str] = (), **values):
    """A ``config_class`` from the YAML file at ``path``, then ``overrides``, then ``values``."""
    merged = check_types(config_class, read_yaml(path), "--config") if path else {}
    merged.update(check_types(config_class, parse_overrides(list(overrides)), "override"))
    merged.update(check_types(config_class, values, "config"))
    return config_class(**merged)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def changed_keys(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between a saved config and the current one."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
