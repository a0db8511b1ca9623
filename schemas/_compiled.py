"""A compiled (jsonschema-rs) check that says only "valid", in front of the Python validator.

The Python validator (`schemas.Validator`) words every refusal and is the one both services
answer with; walking a valid body with it costs 25-250 µs (a tool's arguments, a
dispatch-api body resolving its `$ref`s), the compiled check about 1 µs. So it goes first,
and only ever says "valid": a body it refuses goes to the Python validator, which decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema_rs

from ._datetime import FORMAT_CHECKER
from ._patterns import BASE64_PATTERN, is_padded_base64, portable_pattern


def compiled_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """`schema` compiled to a check that is never more lenient than `schemas.Validator`: the
    same date-time check, patterns with the same classes (`portable_pattern`), every other
    format asserted (stricter than ours, which only annotate). None (Python only) for a
    schema it cannot take as ours means it. `$ref`s resolve within `schema`."""
    translated = _portable(schema)
    if translated is None:
        return None
    formats: dict[str, Callable[[Any], bool]] = {
        name: check for name, (check, _) in FORMAT_CHECKER.checkers.items()
    }
    formats[_BASE64_FORMAT] = is_padded_base64
    try:
        compiled = jsonschema_rs.validator_for(
            translated, validate_formats=True, formats=formats, ignore_unknown_formats=True
        )
    except (ValueError, jsonschema_rs.ValidationError):
        return None

    def check(instance: Any) -> bool:
        try:
            valid: bool = compiled.is_valid(instance)
        except ValueError:  # a value it cannot convert (a lone surrogate): Python decides
            return False
        return valid

    return check


#: The format the compiled check asserts in place of schemas.BASE64_PATTERN.
_BASE64_FORMAT = "dispatch-bridge-padded-base64"
#: Keywords whose values are instances, not schemas: a "pattern" member there is data.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


class _NotPortable(Exception):
    """A pattern of the schema cannot be given to the compiled validator as we mean it."""


def _portable(schema: dict[str, Any]) -> dict[str, Any] | None:
    """`schema` with every `pattern` made portable; None when one cannot be."""
    try:
        converted: dict[str, Any] = _convert(schema)
    except _NotPortable:
        return None
    return converted


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DATA_KEYWORDS:
            out[key] = value
        elif key == "pattern" and value == BASE64_PATTERN and "format" not in node:
            # The same strings, checked by pybase64 (2 ms for a 5 MiB upload, the regex 17).
            out["format"] = _BASE64_FORMAT
        elif key == "pattern" and isinstance(value, str):
            pattern = portable_pattern(value)
            if pattern is None:
                raise _NotPortable(value)
            out[key] = pattern
        else:
            out[key] = _convert(value)
    return out
