"""Request bodies checked against the component schemas of the OpenAPI document.

The document in `schemas/` is the contract; validating with it keeps code and docs from
drifting. Validators are compiled once per schema name: a compiled check (jsonschema-rs)
accepts a valid body, and the Python validator words the errors of any other.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

from jsonschema import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas import FORMAT_CHECKER, Validator, compiled_check

from ..errors import Unprocessable

_BASE = "urn:dispatch-api:openapi"
#: jsonschema's messages quote the offending value whole; a problem echoes at most this much.
_MESSAGE_MAX = 200
#: A 422 lists at most this many violations (each string cut to _MESSAGE_MAX).
MAX_ERRORS = 10


class BodyValidators:
    def __init__(self, document: dict[str, Any], *, compiled: bool = True) -> None:
        """`compiled`: let the compiled check accept valid bodies first."""
        self._with_compiled = compiled
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self._components: dict[str, Any] = document["components"]["schemas"]
        self._validators: dict[str, tuple[Callable[[Any], bool] | None, Any]] = {}

    def compiled(self, name: str) -> bool:
        """Whether valid bodies of schema `name` are accepted by the compiled check."""
        return self._known(name)[0] is not None

    def validate(self, name: str, instance: Any) -> None:
        """Raise 422 `validation_failed` listing every violation with its JSON pointer."""
        fast, validator = self._known(name)
        if fast is not None and fast(instance):
            return
        # The first few only: validation stops there instead of walking all of a hostile
        # body, and the answer stays small whatever the body (`more_errors` says so).
        first = list(islice(validator.iter_errors(instance), MAX_ERRORS + 1))
        if first:
            errors = sorted(first, key=lambda e: [str(p) for p in e.absolute_path])
            found = [item for e in errors for item in _describe(e)]
            extensions: dict[str, Any] = {"errors": found[:MAX_ERRORS]}
            if len(first) > MAX_ERRORS or len(found) > MAX_ERRORS:
                extensions["more_errors"] = True
            raise Unprocessable(
                "validation_failed",
                "; ".join(f"{f['path'] or 'body'}: {f['message']}" for f in found[:5]),
                extensions=extensions,
            )

    def _known(self, name: str) -> tuple[Callable[[Any], bool] | None, Any]:
        known = self._validators.get(name)
        if known is None:
            known = self._validators[name] = self._compile(name)
        return known

    def _compile(self, name: str) -> tuple[Callable[[Any], bool] | None, Any]:
        if name not in self._components:
            raise KeyError(name)
        validator = Validator(
            {"$ref": f"{_BASE}#/components/schemas/{name}"},
            registry=self._registry,
            format_checker=FORMAT_CHECKER,
        )
        # The components as one document, so their `#/components/schemas/...` refs resolve.
        bundled = {
            "$ref": f"#/components/schemas/{name}",
            "components": {"schemas": self._components},
        }
        return (compiled_check(bundled) if self._with_compiled else None), validator


def _describe(error: ValidationError) -> list[dict[str, str]]:
    """One entry per problem, located by JSON pointer ("" is the whole body); an unknown
    member is reported at its own path, with the members that are allowed."""
    path = _bounded(_pointer(error.absolute_path))
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, dict)  # always, for this keyword; the stub allows `Unset`
    ):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(name for name in error.instance if name not in allowed)
        return [
            {
                "path": _bounded(f"{path}/{_pointer([name])[1:]}"),
                "message": f"unknown field; allowed: {', '.join(allowed)}",
            }
            for name in unknown[: MAX_ERRORS + 1]
        ]
    return [{"path": path, "message": _bounded(error.message)}]


def _bounded(message: str) -> str:
    """Head and tail: two long field names that differ only at the end stay apart."""
    if len(message) <= _MESSAGE_MAX:
        return message
    return message[: _MESSAGE_MAX - 41] + "…" + message[-40:]


def invalid_field(path: str, message: str) -> Unprocessable:
    return Unprocessable(
        "validation_failed",
        f"{path}: {message}",
        extensions={"errors": [{"path": path, "message": message}]},
    )


def _pointer(path: Any) -> str:
    """RFC 6901: "" is the document itself, "/a/0" a member of a member."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
