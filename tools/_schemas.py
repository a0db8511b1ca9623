"""Tool schemas from `schemas/tools/`, bundled and compiled once.

Output schemas refer to shared definitions as `#/$defs/Name`; loading copies `_defs.json`'s
`$defs` into each, so every schema a client sees is self-contained (MCP clients validate
`structuredContent` against it and must not have to fetch anything).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from itertools import islice
from typing import Any

from jsonschema import ValidationError

from schemas import FORMAT_CHECKER, Validator, compiled_check

from ._errors import ToolError

_RECEIVED_MAX = 80
_MESSAGE_MAX = 200
#: An answer lists at most this many violations: enough to fix a call, and bounded in size
#: whatever the body (each entry's strings are cut too, paths included: a key can be long).
MAX_ERRORS = 10


def _read(name: str) -> dict[str, Any]:
    text = resources.files("schemas.tools").joinpath(name).read_text()
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _shared_defs() -> dict[str, Any]:
    defs: dict[str, Any] = _read("_defs.json")["$defs"]
    return defs


def input_schema(tool: str) -> dict[str, Any]:
    return _read(f"{tool}.input.json")


def output_schema(tool: str) -> dict[str, Any]:
    schema = _read(f"{tool}.output.json")
    return {**schema, "$defs": {**_shared_defs(), **schema.get("$defs", {})}}


class ArgumentValidator:
    """A compiled validator for one tool's input; errors read as path, expected, received."""

    def __init__(self, tool: str, schema: dict[str, Any], *, compiled: bool = True) -> None:
        """`compiled`: let the compiled check accept valid arguments first (see below)."""
        Validator.check_schema(schema)
        self._tool = tool
        self._validator = Validator(schema, format_checker=FORMAT_CHECKER)
        self._fast = compiled_check(schema) if compiled else None

    @property
    def compiled(self) -> bool:
        """Whether valid arguments are accepted by the compiled check."""
        return self._fast is not None

    def validate(self, arguments: Any) -> None:
        """Raise ToolError `invalid_arguments` listing the first MAX_ERRORS violations
        (`details.more_errors` says when there were more): the answer stays small, and
        validation stops there instead of walking all of a hostile body."""
        if self._fast is not None and self._fast(arguments):
            return
        first = list(islice(self._validator.iter_errors(arguments), MAX_ERRORS + 1))
        if not first:
            return
        errors = sorted(first, key=lambda e: [str(p) for p in e.path])
        # dict.fromkeys: each missing required field is one error, but each such error
        # describes the whole list, so the same entry comes out several times.
        found = list({repr(f): f for e in errors for f in _describe(e)}.values())
        more = len(first) > MAX_ERRORS or len(found) > MAX_ERRORS
        found = found[:MAX_ERRORS]
        summary = "; ".join(
            f"{f['path'] or 'arguments'}: expected {f['expected']}, got {f['received']}"
            for f in found[:5]
        )
        details: dict[str, Any] = {"errors": found}
        if more:
            details["more_errors"] = True
        raise ToolError(
            "invalid_arguments",
            f"Invalid arguments for {self._tool}: {summary}. Fix them and call again.",
            details=details,
        )


def _describe(error: ValidationError) -> list[dict[str, str]]:
    return [{k: _bounded(v) for k, v in entry.items()} for entry in _entries(error)]


def _entries(error: ValidationError) -> list[dict[str, str]]:
    path = "".join(f"/{p}" for p in error.absolute_path)
    # The stubs type schema/validator_value as "maybe unset": these keywords always set them.
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, dict)
    ):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(name for name in error.instance if name not in allowed)
        return [
            {
                "path": f"{path}/{name}",
                "expected": f"no such field (allowed: {', '.join(allowed)})",
                "received": _received(error.instance[name]),
                "message": f"unknown field {name!r}",
            }
            for name in unknown[: MAX_ERRORS + 1]
        ]
    if error.validator == "required" and isinstance(error.validator_value, list):
        return [
            {
                "path": f"{path}/{name}",
                "expected": "a value (required)",
                "received": "nothing",
                "message": f"missing required field {name!r}",
            }
            for name in error.validator_value
            if isinstance(error.instance, dict) and name not in error.instance
        ]
    return [
        {
            "path": path,
            "expected": _expected(error),
            "received": _received(error.instance),
            "message": error.message,
        }
    ]


def _expected(error: ValidationError) -> str:
    value = error.validator_value
    match error.validator:
        case "type":
            return " or ".join(value) if isinstance(value, list) else str(value)
        case "enum" if isinstance(value, list):
            return "one of " + ", ".join("null" if v is None else str(v) for v in value)
        case "pattern":
            return f"a string matching {value}"
        case "minLength":
            return f"at least {value} characters"
        case "maxLength":
            return f"at most {value} characters"
        case "minimum":
            return f"a number >= {value}"
        case "maximum":
            return f"a number <= {value}"
        case "maxItems":
            return f"at most {value} items"
        case "maxProperties":
            return f"at most {value} members"
        case "format":
            return f"a {value} string"
        case _:
            return f"{error.validator} {json.dumps(value, default=str)[:60]}"


def _received(value: Any) -> str:
    if isinstance(value, str):
        value = value[:_RECEIVED_MAX]  # not the whole of a megabyte string, to cut it after
    text = json.dumps(value, default=str)
    return text if len(text) <= _RECEIVED_MAX else text[: _RECEIVED_MAX - 1] + "…"


def _bounded(message: str) -> str:
    """jsonschema's message quotes the whole value: a 2 MB string would come back 2 MB long,
    into the model's context. `received` already shows the start of it. The end is kept
    too: two long field names that differ only there stay two entries."""
    if len(message) <= _MESSAGE_MAX:
        return message
    return message[: _MESSAGE_MAX - 41] + "…" + message[-40:]
