"""The wire contract: JSON Schema and OpenAPI documents, shipped as package data."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from ._datetime import FORMAT_CHECKER, parse_datetime


def openapi_document(service: str) -> dict[str, Any]:
    """The OpenAPI document of `service` (e.g. "dispatch-api"), parsed afresh."""
    text = resources.files("schemas.openapi").joinpath(f"{service}.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """`pattern` with ECMA-262 semantics: `$` ends the string. Python's `$` also matches
    before a final newline, which would let "tech-1\\n" through `^[a-z0-9-]+$`.

    A string over the schema's maxLength is refused by that keyword already; the pattern is
    not run over it, so a body of megabytes cannot buy seconds of regex time."""
    if not isinstance(instance, str) or len(instance) > schema.get("maxLength", len(instance)):
        return
    if not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: ECMA-262 WhiteSpace and LineTerminator: what `\s` means there. Python's `\s` differs
#: (it takes U+001C-U+001F and U+0085, and not U+FEFF), so an address with U+001C in it was
#: refused here while every JSON Schema tool in ECMA terms calls it valid.
_ECMA_SPACE = r"\t\n\v\f\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    # ASCII: `\d` and `\w` are [0-9] and [A-Za-z0-9_] in ECMA-262, not every Unicode digit.
    return re.compile(_ecma_classes(pattern), re.ASCII)


def _ecma_classes(pattern: str) -> str:
    """`pattern` with `\\s` and `\\S` spelled out as ECMA-262 means them."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i : i + 2]
            if escape == r"\s":
                escape = _ECMA_SPACE if in_class else f"[{_ECMA_SPACE}]"
            elif escape == r"\S":
                if in_class:
                    raise ValueError(f"pattern {pattern!r}: \\S inside a class is not supported")
                escape = f"[^{_ECMA_SPACE}]"
            out.append(escape)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


#: The deepest nesting of arrays and objects either service takes in a request body. Ours
#: nest a few levels; Python code that walks a value recursively (jsonschema's messages
#: quote it with repr) fails near 1000, which the JSON parser still accepts.
MAX_JSON_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when parsed JSON `value` nests arrays or objects more than `limit` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


#: Draft 2020-12 with patterns anchored the way JSON Schema (ECMA-262) means them.
Validator: Any = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})

__all__ = [
    "FORMAT_CHECKER",
    "MAX_JSON_DEPTH",
    "Validator",
    "openapi_document",
    "parse_datetime",
    "too_deep",
]
