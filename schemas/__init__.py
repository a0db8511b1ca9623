"""The wire contract: JSON Schema and OpenAPI documents, shipped as package data."""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Sized
from functools import cache
from importlib import resources
from typing import Any

import pybase64
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator as _ValidatorProtocol

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
    fast = _EQUIVALENT_CHECKS.get(pattern)
    if fast is not None:
        if not fast(instance):
            yield ValidationError(f"{instance[:80]!r} does not match {pattern!r}")
        return
    if not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Standard base64 with padding, as the evidence schemas spell it.
BASE64_PATTERN = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def is_padded_base64(text: str) -> bool:
    """Whether `text` matches BASE64_PATTERN, by pybase64's strict decoder (SIMD): 2 ms for
    a 5 MiB upload, where a regex engine walks it in 17 ms (compiled) to 0.7 s (Python's)."""
    try:
        pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


#: Patterns Python's regex engine walks slowly, and a check that accepts exactly the same
#: strings (tests/fuzz/test_bounds.py proves it).
_EQUIVALENT_CHECKS: dict[str, Callable[[str], bool]] = {BASE64_PATTERN: is_padded_base64}


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


def portable_pattern(pattern: str) -> str | None:
    """`pattern` as this module's validator means it, for a regex engine whose classes are
    Unicode-wide (a compiled validator's): `\\s`/`\\S` spelled out as ECMA-262 means them;
    None when it uses a class that differs between the engines (`\\d`, `\\w`, `\\b`)."""
    if re.search(r"\\[dDwWbB]", pattern.replace("\\\\", "")):
        return None
    try:
        return _ecma_classes(pattern)
    except ValueError:
        return None


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


#: Longest text whose brackets `too_deep` counts rather than walking its value.
_COUNT_BRACKETS_UP_TO = 64 * 1024


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH, *, text: bytes | None = None) -> bool:
    """True when parsed JSON `value` nests arrays or objects more than `limit` levels deep.

    `text`: the JSON `value` was parsed from. Each level opens with a bracket, so a short text
    of no more than `limit` brackets cannot nest deeper, and is answered by counting them in C
    instead of walking the value (a walk is ~2 µs for the smallest call, on every call). A
    long text is walked: counting scans every byte (12 ms for a 7 MB evidence upload, on the
    event loop), a walk only the values, and a big body is mostly one long string."""
    if (
        text is not None
        and len(text) <= _COUNT_BRACKETS_UP_TO
        and text.count(b"{") + text.count(b"[") <= limit
    ):
        return False
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


def _size_error(limit_keyword: str, unit: str) -> Any:
    """`maxItems` / `maxProperties` / `maxLength` whose message gives the sizes: jsonschema's
    quotes the whole value, so a 200,000-item array cost its repr (megabytes) per answer."""

    def check(validator: Any, limit: int, instance: Any, schema: Any) -> Any:
        kind = {"maxItems": "array", "maxProperties": "object", "maxLength": "string"}
        if validator.is_type(instance, kind[limit_keyword]) and len(instance) > limit:
            yield ValidationError(f"has {len(instance)} {unit}, more than the {limit} allowed")

    return check


def _unless_oversized(keyword: str, limit_keyword: str, kind: type[Sized]) -> Any:
    """`keyword` (which walks every member) skipped when the container is over its own size
    limit: that keyword reports it already, and checking 200,000 members one by one let one
    body hold the event loop for seconds (and answer with 200,000 errors)."""
    original = Draft202012Validator.VALIDATORS[keyword]

    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, kind) and len(instance) > schema.get(limit_keyword, len(instance)):
            return
        yield from original(validator, value, instance, schema)

    return check


#: Draft 2020-12 with patterns anchored the way JSON Schema (ECMA-262) means them, and sized
#: containers refused by their size before their members are looked at.
# types-jsonschema leaves `extend` unannotated (`create` is typed); it returns a validator class.
Validator: type[_ValidatorProtocol] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        "pattern": _ecma_pattern,
        "maxItems": _size_error("maxItems", "items"),
        "maxProperties": _size_error("maxProperties", "members"),
        "maxLength": _size_error("maxLength", "characters"),
        **{
            keyword: _unless_oversized(keyword, "maxItems", list)
            for keyword in ("items", "prefixItems", "contains", "uniqueItems")
        },
        **{
            keyword: _unless_oversized(keyword, "maxProperties", dict)
            for keyword in (
                "properties",
                "additionalProperties",
                "patternProperties",
                "propertyNames",
                "dependentSchemas",
            )
        },
        "format": _unless_oversized("format", "maxLength", str),
    },
)

__all__ = [
    "BASE64_PATTERN",
    "FORMAT_CHECKER",
    "MAX_JSON_DEPTH",
    "Validator",
    "is_padded_base64",
    "openapi_document",
    "parse_datetime",
    "portable_pattern",
    "too_deep",
]
