"""The wire contract: JSON Schema and OpenAPI documents, shipped as package data."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators


def openapi_document(service: str) -> dict[str, Any]:
    """The OpenAPI document of `service` (e.g. "dispatch-api"), parsed afresh."""
    text = resources.files("schemas.openapi").joinpath(f"{service}.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """`pattern` with ECMA-262 semantics: `$` ends the string. Python's `$` also matches
    before a final newline, which would let "tech-1\\n" through `^[a-z0-9-]+$`."""
    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


#: Draft 2020-12 with patterns anchored the way JSON Schema (ECMA-262) means them.
Validator: Any = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})

__all__ = ["Validator", "openapi_document"]
