"""What both transports refuse at the edge (bridge/_edge.py): headers sent twice or unsafe,
bodies that cannot be read as sent. Each keeps its precise HTTP status, which no answer
carries inside itself: agents once read `details.http_status` in the envelope, and a
problem+json `http_status` member next to its own `status`."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from multidict import CIMultiDict

from testkit.api import COMPLETE_TICKET, Reply

from .conftest import Bridge

INVOKE = "/v1/tools/ticket.create/invoke"
JSON = "application/json"
#: A refusal is a small answer, whatever was sent.
MAX_REFUSAL_BYTES = 4096
#: A body over the default small limit (DISPATCH_BRIDGE_MAX_CALL_BYTES) of every call.
OVERSIZED = orjson.dumps({"arguments": {**COMPLETE_TICKET, "description": "x" * 300_000}})
RPC_CALL = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "ticket.create", "arguments": {**COMPLETE_TICKET, "priority": "P9"}},
    }
)
RPC_OVERSIZED = orjson.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "ticket.create", "arguments": {"description": "x" * 300_000}},
    }
)


async def send(
    bridge: Bridge,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    data: bytes | None = None,
    *,
    key: bool = True,
) -> Reply:
    """One request with exactly these headers (a name may repeat), as the supervisor."""
    sent: CIMultiDict[str] = CIMultiDict(headers)
    if key:
        sent.add("Authorization", f"Bearer {bridge.keys['supervisor']}")
    if path == "/mcp":
        sent.setdefault("Accept", "application/json, text/event-stream")
    async with bridge.session.request(
        method, path, data=data, headers=sent, skip_auto_headers=("Content-Type",)
    ) as resp:
        raw = await resp.read()
        body = orjson.loads(raw) if "json" in resp.headers.get("Content-Type", "") else None
        return Reply(resp.status, resp.headers, body, raw)


def every_key(value: Any) -> Iterator[str]:
    """Every member name in a JSON value, also inside an MCP tool result's text (which
    carries the REST envelope as JSON)."""
    if isinstance(value, dict):
        for name, member in value.items():
            yield name
            if name == "text" and isinstance(member, str) and member.startswith("{"):
                yield from every_key(orjson.loads(member))
            else:
                yield from every_key(member)
    elif isinstance(value, list):
        for member in value:
            yield from every_key(member)


def assert_carries_no_status(label: str, reply: Reply) -> None:
    assert "http_status" not in set(every_key(reply.body)), (label, reply.body)
    assert len(reply.raw) <= MAX_REFUSAL_BYTES, (label, reply.raw[:300])


def envelope_error(reply: Reply, status: int) -> dict[str, Any]:
    assert (reply.status, reply.content_type) == (status, JSON), reply.raw[:300]
    assert reply.body["ok"] is False
    error: dict[str, Any] = reply.body["error"]
    assert error["code"] == "invalid_arguments"
    assert error["details"]["outcome"] == "none"
    return error


def problem(reply: Reply, status: int) -> dict[str, Any]:
    assert (reply.status, reply.content_type) == (status, "application/problem+json")
    assert (reply.body["status"], reply.body["code"]) == (status, "invalid_arguments")
    body: dict[str, Any] = reply.body
    return body


def rpc_error(reply: Reply, status: int, code: int) -> dict[str, Any]:
    assert (reply.status, reply.content_type) == (status, JSON), reply.raw[:300]
    assert reply.body["error"]["code"] == code, reply.body
    error: dict[str, Any] = reply.body["error"]
    return error


async def test_rest_refusals_keep_their_statuses_and_no_answer_carries_http_status(
    bridge: Bridge,
) -> None:
    json_ctype = [("Content-Type", JSON)]
    twice = [("X-Correlation-ID", "a"), ("X-Correlation-ID", "b")]
    replies = {
        "correlation id twice": await send(bridge, "POST", INVOKE, twice, b"{}"),
        "unsafe correlation id": await send(
            bridge, "POST", INVOKE, [("X-Correlation-ID", "a b\tc")], b"{}"
        ),
        "idempotency key twice": await send(
            bridge, "GET", "/v1/tools", [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        ),
        "key twice on a route": await send(
            bridge, "GET", "/v1/tools", [("Authorization", "Bearer x")]
        ),
        "key twice on invoke": await send(
            bridge, "POST", INVOKE, [("Authorization", "Bearer x"), *json_ctype], b"{}"
        ),
        "empty body": await send(bridge, "POST", INVOKE, json_ctype, b""),
        "not declared json": await send(
            bridge, "POST", INVOKE, [("Content-Type", "text/plain")], b'{"arguments": {}}'
        ),
        "gzip": await send(
            bridge,
            "POST",
            INVOKE,
            [*json_ctype, ("Content-Encoding", "gzip")],
            gzip.compress(b'{"arguments": {}}'),
        ),
        "oversized": await send(bridge, "POST", INVOKE, json_ctype, OVERSIZED),
        "bad json": await send(bridge, "POST", INVOKE, json_ctype, b"{not json"),
    }

    assert problem(replies["correlation id twice"], 400)["header"] == "X-Correlation-ID"
    assert problem(replies["unsafe correlation id"], 400)["header"] == "X-Correlation-ID"
    assert problem(replies["idempotency key twice"], 400)["header"] == "Idempotency-Key"
    assert problem(replies["key twice on a route"], 400)["header"] == "Authorization"
    assert envelope_error(replies["key twice on invoke"], 400)["details"] == {
        "header": "Authorization",
        "outcome": "none",
    }
    assert "empty" in envelope_error(replies["empty body"], 400)["message"]
    assert "text/plain" in envelope_error(replies["not declared json"], 415)["message"]
    assert envelope_error(replies["gzip"], 415)["details"] == {
        "accepted_encodings": ["identity"],
        "outcome": "none",
    }
    assert envelope_error(replies["oversized"], 413)["details"]["limit_bytes"] > 0
    assert "not valid JSON" in envelope_error(replies["bad json"], 422)["message"]
    for label, reply in replies.items():
        assert_carries_no_status(label, reply)
    assert bridge.proxy.requests == 0


async def test_mcp_refusals_keep_their_statuses_and_no_answer_carries_http_status(
    bridge: Bridge,
) -> None:
    json_ctype = [("Content-Type", JSON)]
    ping = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    twice = [("X-Correlation-ID", "a"), ("X-Correlation-ID", "b"), *json_ctype]
    replies = {
        "correlation id twice": await send(bridge, "POST", "/mcp", twice, ping),
        "key twice": await send(
            bridge, "POST", "/mcp", [("Authorization", "Bearer x"), *json_ctype], ping
        ),
        "key twice on GET": await send(bridge, "GET", "/mcp", [("Authorization", "Bearer x")]),
        "not declared json": await send(
            bridge, "POST", "/mcp", [("Content-Type", "text/plain")], ping
        ),
        "gzip": await send(
            bridge,
            "POST",
            "/mcp",
            [*json_ctype, ("Content-Encoding", "gzip")],
            gzip.compress(ping),
        ),
        "oversized": await send(bridge, "POST", "/mcp", json_ctype, RPC_OVERSIZED),
        "bad json": await send(bridge, "POST", "/mcp", json_ctype, b"{not json"),
        "bad arguments": await send(bridge, "POST", "/mcp", json_ctype, RPC_CALL),
    }

    assert problem(replies["correlation id twice"], 400)["header"] == "X-Correlation-ID"
    assert "Authorization" in rpc_error(replies["key twice"], 400, -32600)["message"]
    assert problem(replies["key twice on GET"], 400)["header"] == "Authorization"
    assert "text/plain" in rpc_error(replies["not declared json"], 415, -32600)["message"]
    assert rpc_error(replies["gzip"], 415, -32600)["data"] == {"accepted_encodings": ["identity"]}
    assert rpc_error(replies["oversized"], 413, -32600)["data"]["limit_bytes"] > 0
    rpc_error(replies["bad json"], 400, -32700)
    called = replies["bad arguments"]
    assert called.status == 200
    assert called.body["result"]["isError"] is True
    [block] = called.body["result"]["content"]
    assert orjson.loads(block["text"])["error"]["code"] == "invalid_arguments"
    for label, reply in replies.items():
        assert_carries_no_status(label, reply)
    assert bridge.proxy.requests == 0
