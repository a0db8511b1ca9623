"""The wire contract: JSON Schema and OpenAPI documents, shipped as package data."""

from __future__ import annotations

import json
from collections.abc import Sized
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator as _ValidatorProtocol

from ._compiled import compiled_check
from ._datetime import FORMAT_CHECKER, parse_datetime
from ._patterns import BASE64_PATTERN, ecma_pattern


def openapi_document(service: str) -> dict[str, Any]:
    """The OpenAPI document of `service` (e.g. "dispatch-api"), parsed afresh."""
    text = resources.files("schemas.openapi").joinpath(f"{service}.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


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
        "pattern": ecma_pattern,
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
    "compiled_check",
    "openapi_document",
    "parse_datetime",
    "too_deep",
]
