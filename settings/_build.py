"""Frozen settings dataclasses built from a TOML table and the environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from ._errors import SettingsError
from ._secret import Secret

T = TypeVar("T")


def env_name(field_name: str) -> str:
    """The environment variable of a setting that names none of its own."""
    return "DISPATCH_" + field_name.upper()


def fields_of(cls: type) -> frozenset[str]:
    """The TOML keys a settings dataclass reads: its field names."""
    return frozenset(f.name for f in fields(cls))


def _parse_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer")
    if isinstance(raw, int):
        return raw
    return int(str(raw).strip())


def _parse_float(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    return float(raw) if isinstance(raw, int | float) else float(str(raw).strip())


def _parse_tuple(raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return tuple(str(i).strip() for i in items if str(i).strip())


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


# Keyed by the annotation as written (the settings modules use postponed annotations).
_PARSERS: dict[str, Callable[[object], Any]] = {
    "Path": lambda raw: Path(str(raw)),
    "Path | None": lambda raw: Path(str(raw)) if str(raw) else None,
    "Secret | None": lambda raw: Secret(str(raw)) if str(raw) else None,
    "str | None": lambda raw: str(raw) if str(raw) else None,
    "str": str,
    "bool": lambda raw: raw if isinstance(raw, bool) else _parse_bool(str(raw)),
    "int": _parse_int,
    "float": _parse_float,
    "tuple[str, ...]": _parse_tuple,
}


def build_settings(
    cls: type[T],
    env: Mapping[str, str],
    table: Mapping[str, Any],
    *,
    where: str,
    ignore: frozenset[str] = frozenset(),
    **overrides: Any,
) -> T:
    """An instance of the frozen dataclass `cls` from a TOML table, then the environment
    (each field's variable is `DISPATCH_<NAME>` unless its metadata names another), then
    `overrides`. Unknown TOML keys, unreadable values and values the class refuses (its
    `__post_init__` raising ValueError) raise SettingsError."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for name in table:
        if name not in known and name not in ignore:
            raise SettingsError(f"{where}: unknown setting {name!r}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        variable = spec.metadata.get("env", env_name(name))
        source = env.get(variable, table.get(name))
        if source is None:
            continue
        try:
            values[name] = _PARSERS[str(spec.type)](source)
        except (TypeError, ValueError, KeyError):
            raise SettingsError(f"{variable}: cannot read {source!r} as {spec.type}") from None
    values.update(overrides)
    try:
        return cls(**values)
    except SettingsError:
        raise
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
