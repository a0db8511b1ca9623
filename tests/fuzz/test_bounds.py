"""Every input is bounded: each array, string and object of every tool input schema and of
every request body of both OpenAPI documents has a size limit; a body to a tool that carries
no content is refused far below the evidence limit; validation of a huge body stops at its
size, and its 422 is small whatever the body (both services).

Reported: a 600 kB queue.view body (200,000 items) held the bridge's event loop for 16.6 s
and answered with a 75 MB 422.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch_api.errors import Unprocessable
from dispatch_api.web._validation import BodyValidators
from schemas import BASE64_PATTERN, Validator, openapi_document
from testkit.api import Reply
from tools import ToolError
from tools._schemas import ArgumentValidator

from .conftest import Bridge
from .test_corpus import (
    Probe,
    Targets,
    assert_harmless,
    envelope,
    problem,
    rest_call,
    rpc_call,
    rpc_error,
    tool_error,
)

#: Every 422 (and 413) of either service stays under this, whatever the body.
MAX_ANSWER_BYTES = 16 * 1024
HUGE_ARRAY = ["NOT_A_STATE"] * 200_000
MANY_KEYS = {f"k{i}": 1 for i in range(100_000)}
MANY_KEYS_IN_64K = {f"{'k' * 80}{i}": 1 for i in range(500)}

# --- the schemas ----------------------------------------------------------------------


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def unbounded(document: dict[str, Any], schema: Any, where: str) -> Iterator[str]:
    """Where `schema` (and every schema under it, $refs followed) lets a string, array or
    object grow without limit: strings need maxLength (unless enum or const), arrays
    maxItems, objects maxProperties, free-form objects included."""
    seen: set[str] = set()
    stack = [(schema, where)]
    while stack:
        node, at = stack.pop()
        if not isinstance(node, dict):
            continue
        if "$ref" in node and node["$ref"] not in seen:
            seen.add(node["$ref"])
            stack.append((_resolve(document, node["$ref"]), node["$ref"]))
        types = node.get("type", [])
        types = {types} if isinstance(types, str) else set(types)
        sized = "enum" in node or "const" in node
        if "string" in types and not sized and "maxLength" not in node:
            yield f"{at}: a string without maxLength"
        if "array" in types and "maxItems" not in node:
            yield f"{at}: an array without maxItems"
        if "object" in types and "maxProperties" not in node:
            yield f"{at}: an object without maxProperties"
        for key in ("properties", "patternProperties", "$defs"):
            stack += [(sub, f"{at}/{key}/{name}") for name, sub in node.get(key, {}).items()]
        for key in ("items", "additionalProperties", "contains", "propertyNames", "not"):
            stack.append((node.get(key), f"{at}/{key}"))
        for key in ("prefixItems", "allOf", "anyOf", "oneOf"):
            stack += [(sub, f"{at}/{key}/{i}") for i, sub in enumerate(node.get(key, []))]


def _tool_inputs() -> Iterator[tuple[str, dict[str, Any]]]:
    folder = resources.files("schemas.tools")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".input.json"):
            yield entry.name, json.loads(entry.read_text())


def _request_bodies(service: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    document = openapi_document(service)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body is not None and "$ref" in body:
                body = _resolve(document, body["$ref"])
            for media, content in (body or {}).get("content", {}).items():
                where = f"{service} {method.upper()} {path} ({media})"
                yield where, document, content.get("schema", {})


def test_every_tool_input_and_request_body_schema_bounds_every_string_array_and_object() -> None:
    # The tools' shared `_defs.json` describes outputs (tickets, timelines) only: no input
    # refers to it, and what dispatch-api answers is bounded by paging, not by a schema.
    found = [p for name, schema in _tool_inputs() for p in unbounded(schema, schema, name)]
    for service in ("dispatch-api", "bridge"):
        for where, document, schema in _request_bodies(service):
            found += unbounded(document, schema, where)

    assert found == []
    assert len(list(_tool_inputs())) >= 17
    assert len(list(_request_bodies("dispatch-api"))) >= 10


def test_the_schema_walk_finds_an_unbounded_free_form_object_string_and_array() -> None:
    schema = {
        "type": "object",
        "maxProperties": 3,
        "properties": {
            "free": {"type": "object"},
            "text": {"type": ["string", "null"]},
            "list": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 2},
        },
        "$defs": {"Item": {"type": "array"}},
    }

    assert sorted(unbounded(schema, schema, "s")) == [
        "#/$defs/Item: an array without maxItems",
        "s/$defs/Item: an array without maxItems",
        "s/properties/free: an object without maxProperties",
        "s/properties/text: a string without maxLength",
    ]


# --- the answers ----------------------------------------------------------------------


def _small(check: Any) -> Any:
    def checked(reply: Reply) -> None:
        check(reply)
        assert len(reply.raw) < MAX_ANSWER_BYTES, len(reply.raw)

    return checked


def _envelope_of(reply: Reply) -> dict[str, Any]:
    """The REST envelope, or the one inside an MCP tool result."""
    if "result" in reply.body:
        envelope: dict[str, Any] = orjson.loads(reply.body["result"]["content"][0]["text"])
        return envelope
    return dict(reply.body)


def _errors_of(reply: Reply) -> list[dict[str, Any]]:
    if "errors" in reply.body:
        errors: list[dict[str, Any]] = reply.body["errors"]  # problem+json
        return errors
    errors = _envelope_of(reply)["error"]["details"]["errors"]
    return errors


def only_error_at(path: str, check: Any) -> Any:
    """`check`, with exactly one violation listed, at `path`: the container's size, not
    one per member (which a validator walking every member would list first)."""

    def checked(reply: Reply) -> None:
        check(reply)
        assert [e["path"] for e in _errors_of(reply)] == [path], _errors_of(reply)[:3]
        assert len(reply.raw) < MAX_ANSWER_BYTES, len(reply.raw)

    return checked


async def test_a_200000_item_queue_view_is_refused_by_its_size_before_it_is_parsed(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    # The body limit of a tool that carries no content is 64 KiB, far below evidence's.
    t = Targets(bridge)
    arguments = {"state": HUGE_ARRAY}

    def limited(reply: Reply) -> None:
        error = reply.body["error"]
        details = error["data"] if "data" in error else error["details"]  # JSON-RPC or REST
        assert details["limit_bytes"] == 64 * 1024, reply.body

    probes = [
        Probe(
            "REST queue.view",
            t.invoke("queue.view", rest_call(arguments)),
            _small(_both(envelope(413, "invalid_arguments"), limited)),
        ),
        Probe(
            "MCP queue.view",
            t.mcp(rpc_call("queue_view", arguments)),
            _small(_both(rpc_error(413, -32600), limited)),
        ),
    ]

    await assert_harmless(bridge, log_lines, probes)

    assert bridge.proxy.requests == 0


def _both(*checks: Any) -> Any:
    def checked(reply: Reply) -> None:
        for check in checks:
            check(reply)

    return checked


@pytest.mark.parametrize("bridge_overrides", [{"max_call_bytes": 8 * 1024 * 1024}])
async def test_a_200000_item_array_within_the_body_limit_gets_one_small_maxitems_error(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    t = Targets(bridge)
    state = {"state": HUGE_ARRAY}
    many = {"ticket_id": str(uuid.uuid4()), **MANY_KEYS}
    probes = [
        Probe(
            "REST queue.view, 200,000 states",
            t.invoke("queue.view", rest_call(state)),
            only_error_at("/state", envelope(422, "invalid_arguments")),
        ),
        Probe(
            "MCP queue.view, 200,000 states",
            t.mcp(rpc_call("queue.view", state)),
            only_error_at("/state", tool_error("invalid_arguments")),
        ),
        Probe(
            "REST, 500 long unknown body fields beside arguments",
            t.invoke("ticket.get", orjson.dumps({"arguments": {}, **MANY_KEYS_IN_64K})),
            _small(_listed(10, envelope(422, "invalid_arguments"))),
        ),
        Probe(
            "REST ticket.get, 100,000 unknown fields",
            t.invoke("ticket.get", rest_call(many)),
            only_error_at("", envelope(422, "invalid_arguments")),
        ),
        Probe(
            "MCP ticket.get, 100,000 unknown fields",
            t.mcp(rpc_call("ticket.get", many)),
            only_error_at("", tool_error("invalid_arguments")),
        ),
    ]

    await assert_harmless(bridge, log_lines, probes)

    assert bridge.proxy.requests == 0


async def test_the_evidence_tool_keeps_the_large_limit_and_still_answers_small(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    t = Targets(bridge)
    attach = {"ticket_id": str(uuid.uuid4()), "kind": "note", "content_type": "text/plain"}
    # Twenty more fields, within maxProperties: ten are listed, their long names cut.
    long_names = {**attach, **{f"{'n' * 5000}{i}": 1 for i in range(20)}}
    probes = [
        Probe(
            "REST evidence.attach, 100,000 unknown fields",
            t.invoke("evidence.attach", rest_call({**attach, **MANY_KEYS})),
            only_error_at("", envelope(422, "invalid_arguments")),
        ),
        Probe(
            "REST evidence.attach, a 200,000-item tag",
            t.invoke("evidence.attach", rest_call({**attach, "tag": HUGE_ARRAY})),
            only_error_at("/tag", envelope(422, "invalid_arguments")),
        ),
        Probe(
            "REST evidence.attach, long unknown names",
            t.invoke("evidence.attach", rest_call(long_names)),
            _small(_listed(10, envelope(422, "invalid_arguments"))),
        ),
        Probe(
            "MCP evidence.attach, long unknown names",
            t.mcp(rpc_call("evidence.attach", long_names)),
            _small(_listed(10, tool_error("invalid_arguments"))),
        ),
    ]

    await assert_harmless(bridge, log_lines, probes)


def _listed(count: int, check: Any) -> Any:
    def checked(reply: Reply) -> None:
        check(reply)
        errors = _errors_of(reply)
        assert len(errors) == count, errors
        more = reply.body.get("more_errors") or _envelope_of(reply)["error"]["details"]
        assert more is True or more.get("more_errors") is True, reply.body
        assert all(len(v) <= 200 for e in errors for v in e.values()), errors

    return checked


async def test_dispatch_api_answers_a_huge_body_with_one_small_422(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    t = Targets(bridge)
    ticket = await bridge.api.create_ticket()
    evidence = f"/v1/tickets/{ticket['id']}/evidence"
    upload = {"kind": "note", "content_type": "text/plain"}
    long_names = {**upload, **{f"{'n' * 5000}{i}": 1 for i in range(20)}}
    probes = [
        Probe(
            "api evidence, 100,000 unknown fields",
            t.api_post(evidence, orjson.dumps({**upload, **MANY_KEYS})),
            only_error_at("", problem(422, "validation_failed")),
        ),
        Probe(
            "api evidence, a 200,000-item tag",
            t.api_post(evidence, orjson.dumps({**upload, "tag": HUGE_ARRAY})),
            only_error_at("/tag", problem(422, "validation_failed")),
        ),
        Probe(
            "api evidence, long unknown names",
            t.api_post(evidence, orjson.dumps(long_names)),
            _small(_listed(10, problem(422, "validation_failed"))),
        ),
    ]

    await assert_harmless(bridge, log_lines, probes)


# --- the validators, past their schemas' bounds ------------------------------------------

#: Twenty wrong fields, in a schema with no size bounds (ours all have them).
_WIDE = {
    "type": "object",
    "properties": {f"f{i}": {"type": "integer"} for i in range(20)},
}


def test_a_tool_validator_lists_ten_violations_and_says_there_were_more() -> None:
    validator = ArgumentValidator("wide", _WIDE)

    with pytest.raises(ToolError) as raised:
        validator.validate({f"f{i}": "x" * 10_000 for i in range(20)})

    details = raised.value.details
    assert len(details["errors"]) == 10
    assert details["more_errors"] is True
    assert len(orjson.dumps(raised.value.to_json())) < 8 * 1024


def test_dispatch_api_validation_lists_ten_violations_and_says_there_were_more() -> None:
    validators = BodyValidators({"components": {"schemas": {"Wide": _WIDE}}})

    with pytest.raises(Unprocessable) as raised:
        validators.validate("Wide", {f"f{i}": "x" * 10_000 for i in range(20)})

    assert len(raised.value.extensions["errors"]) == 10
    assert raised.value.extensions["more_errors"] is True
    assert len(orjson.dumps(raised.value.extensions)) + len(raised.value.detail) < 8 * 1024


# --- the base64 pattern, checked without the regex engine's slow walk ---------------------

_SLOW_BASE64 = re.compile(BASE64_PATTERN[:-1] + r"\Z", re.ASCII)
_B64_ALPHABET = "AZaz09+/=\n -_"


@given(st.text(alphabet=_B64_ALPHABET, max_size=40))
def test_the_fast_base64_check_accepts_exactly_what_the_pattern_does(text: str) -> None:
    validator = Validator({"type": "string", "pattern": BASE64_PATTERN})

    assert validator.is_valid(text) == bool(_SLOW_BASE64.search(text))


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("", True),
        ("QQ==", True),
        ("QUI=", True),
        ("QUJD", True),
        ("QUJDRA==", True),
        ("Q===", False),
        ("QQ=", False),
        ("QUJ", False),
        ("QU=I", False),
        ("QUJD\n", False),
        ("QUJD=", False),
        ("-_-_", False),
    ],
)
def test_the_fast_base64_check_on_the_edges(text: str, valid: bool) -> None:
    assert Validator({"type": "string", "pattern": BASE64_PATTERN}).is_valid(text) is valid
    assert bool(_SLOW_BASE64.search(text)) is valid
