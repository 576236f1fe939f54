"""Reading typed config files: a YAML mapping into nested dataclasses, every error naming the file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from perception.errors import ConfigError


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file → ``{}``); ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", str(path))
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", str(path)) from exc
    if not isinstance(doc, dict):
        raise ConfigError("expected a mapping", str(path))
    return doc


def build_dataclass(kind: type, values: Any, where: str) -> Any:
    """``kind(**values)`` with each value checked against the type of the field's default: unknown keys,
    a string for a number, a number for true/false or a scalar for a list are errors naming ``where.key``."""
    if not isinstance(values, dict):
        raise ConfigError("expected a mapping", where)
    defaults = kind()
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}", where)
    out: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError("expected true/false")
                out[key] = value
            elif isinstance(default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"expected a number, got {type(value).__name__}")
                out[key] = type(default)(value)
            elif isinstance(default, list):
                if not isinstance(value, list):
                    raise TypeError("expected a list")
                out[key] = [type(default[0])(v) for v in value] if default else list(value)
            else:
                out[key] = type(default)(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad value {value!r}: {exc}", f"{where}.{key}") from exc
    return kind(**out)
