"""The TOML configuration file: read it, and refuse what no setting reads.

A key nobody reads is a mistake the operator believes took effect (a typo, a table from
another version), so the whole file is checked against one schema before anything starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import SettingsError

#: Every table the file may hold: its known keys, or a check of its own (a table with
#: sub-tables, such as `[retry]`, whose parser refuses unknown keys itself). The key `""`
#: lists the top-level settings (not tables).
Schema = Mapping[str, frozenset[str] | Callable[[Any], object]]


def read_config(config_file: Path | None) -> dict[str, Any]:
    """The parsed TOML file, or {} without one; SettingsError naming the file when unreadable."""
    if config_file is None:
        return {}
    try:
        return tomllib.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"--config {config_file}: {exc}") from None


def _is_table(value: object) -> bool:
    """A `[table]` or an `[[array of tables]]` (a list of strings is a plain setting)."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def top_level(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The file's top-level settings, without its tables."""
    return {key: value for key, value in raw.items() if not _is_table(value)}


def check_config(raw: Mapping[str, Any], schema: Schema, *, where: str) -> None:
    """SettingsError naming the first table or key of `raw` that `schema` does not know."""
    known_top = schema.get("", frozenset())
    tables = sorted(name for name in schema if name)
    for name, value in raw.items():
        if name and name in schema and not _is_table(value):
            entry = schema[name]
            if not isinstance(entry, frozenset):
                entry(value)  # its own check names what is wrong
            raise SettingsError(f"{name}: expected a table, got {value!r}")
        if not _is_table(value):
            if not isinstance(known_top, frozenset) or name not in known_top:
                raise SettingsError(f"{where}: unknown setting {name!r}")
            continue
        if name not in schema or not name:
            raise SettingsError(
                f"{where}: unknown table [{name}]; known tables: {', '.join(tables)}"
            )
        entry = schema[name]
        if not isinstance(entry, frozenset):
            entry(value)
            continue
        for item in value if isinstance(value, list) else [value]:
            for key in item:
                if key not in entry:
                    raise SettingsError(f"{where}: unknown setting {key!r} in [{name}]")
