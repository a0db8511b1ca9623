"""The /mcp endpoint on the wire, without an SDK: JSON-RPC framing, HTTP statuses, the
handshake revisions and the stateless 2026-07-28 revision."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.api import COMPLETE_TICKET, Reply
from tools import catalog, mcp_tool

from .conftest import Bridge

MODERN = "2026-07-28"
ALL_VERSIONS = ["2025-06-18", "2025-11-25", MODERN]
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SUPERVISOR_TOOLS = [t.alias for t in catalog() if t.allowed("supervisor")]
#: Arguments ticket.create refuses before anything reaches dispatch-api.
BAD_CREATE = {**COMPLETE_TICKET, "priority": "P9"}


async def post(
    bridge: Bridge,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    as_: str = "supervisor",
) -> Reply:
    """POST one message (JSON-encoded `body`, or raw `data`) to /mcp."""
    if data is None:
        data = json.dumps(body).encode()
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    sent.update(headers or {})
    return await bridge.request("POST", "/mcp", data=data, headers=sent, as_=as_)


def request(method: str, params: Any = None, ident: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        body["params"] = params
    return body


def modern(method: str, params: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """A 2026-07-28 request: version and capabilities in `params._meta`."""
    full_meta = {META_VERSION: MODERN, META_CAPABILITIES: {}, **meta}
    return request(method, {**(params or {}), "_meta": full_meta})


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def rpc_result(reply: Reply, ident: Any = 1) -> dict[str, Any]:
    """The result of a successful JSON-RPC answer (HTTP 200)."""
    assert reply.status == 200, reply.raw
    assert reply.content_type == "application/json"
    assert set(reply.body) == {"jsonrpc", "id", "result"}, reply.body
    assert reply.body["jsonrpc"] == "2.0"
    assert reply.body["id"] == ident
    result: dict[str, Any] = reply.body["result"]
    return result


def rpc_error(reply: Reply, status: int, ident: Any = None) -> dict[str, Any]:
    """The error object of a JSON-RPC error answer with HTTP `status`."""
    assert reply.status == status, reply.raw
    assert reply.content_type == "application/json"
    assert set(reply.body) == {"jsonrpc", "id", "error"}
    assert reply.body["jsonrpc"] == "2.0"
    assert reply.body["id"] == ident
    error: dict[str, Any] = reply.body["error"]
    assert isinstance(error["code"], int)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def tool_error(result: dict[str, Any]) -> dict[str, Any]:
    """The REST envelope a failed tools/call carries as text."""
    assert result["isError"] is True
    assert "structuredContent" not in result
    [block] = result["content"]
    assert block["type"] == "text"
    envelope: dict[str, Any] = orjson.loads(block["text"])
    assert envelope["ok"] is False
    return envelope


# --- HTTP edges -----------------------------------------------------------------------------


async def test_a_missing_or_wrong_key_is_401_with_a_bearer_challenge(bridge: Bridge) -> None:
    ping = request("ping")
    replies = [
        await post(bridge, ping, as_=""),
        await post(bridge, ping, as_="", headers={"Authorization": "Bearer nope"}),
        await post(bridge, ping, as_="", headers={"Authorization": "Basic YWdlbnQ6a2V5"}),
        await post(bridge, ping, as_="", headers={"Authorization": "Bearer "}),
    ]

    for reply in replies:
        error = rpc_error(reply, 401)
        assert error["code"] == -32001
        assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    assert bridge.proxy.requests == 0


async def test_get_and_delete_are_405_allowing_only_post(bridge: Bridge) -> None:
    for method in ("GET", "DELETE"):
        reply = await bridge.request(method, "/mcp")

        assert reply.status == 405, method
        assert reply.headers["Allow"] == "POST"


async def test_an_origin_other_than_this_host_is_403_and_loopback_origins_are_allowed(
    bridge: Bridge,
) -> None:
    port = bridge.session._base_url.port if bridge.session._base_url else None
    evil = await post(bridge, request("ping"), headers={"Origin": "https://evil.example"})
    unkeyed = await post(bridge, request("ping"), headers={"Origin": "null"}, as_="")
    same = await post(bridge, request("ping"), headers={"Origin": f"http://127.0.0.1:{port}"})
    local = await post(bridge, request("ping"), headers={"Origin": "http://localhost:5173"})

    assert evil.status == 403
    assert unkeyed.status == 403
    assert rpc_result(same) == {}
    assert rpc_result(local) == {}


async def raw_mcp(bridge: Bridge, host: str, *origins: str) -> bytes:
    """One ping over a raw socket with the given Host and Origin headers: the raw answer."""
    assert bridge.session._base_url is not None
    body = json.dumps(request("ping")).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {host}\r\n"
        + "".join(f"Origin: {origin}\r\n" for origin in origins)
        + f"Authorization: Bearer {bridge.keys['supervisor']}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.session._base_url.port)
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_rebinding_page_whose_origin_matches_the_host_it_sends_is_refused(
    bridge: Bridge,
) -> None:
    # After DNS rebinding, evil.example resolves to this host: the browser sends the
    # attacker's name as both Host and Origin.
    port = bridge.session._base_url.port if bridge.session._base_url else None
    rebound = await raw_mcp(bridge, f"evil.example:{port}", f"http://evil.example:{port}")
    plain = await raw_mcp(bridge, "evil.example", "http://evil.example")
    local = await raw_mcp(bridge, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")

    assert rebound.startswith(b"HTTP/1.1 403 ")
    assert plain.startswith(b"HTTP/1.1 403 ")
    assert local.startswith(b"HTTP/1.1 200 ")
    assert bridge.proxy.requests == 0


@pytest.mark.parametrize(
    "bridge_overrides", [{"mcp_allowed_origins": ("https://console.example.com",)}]
)
async def test_only_the_configured_origins_may_call_mcp(bridge: Bridge) -> None:
    allowed = await post(bridge, request("ping"), headers={"Origin": "https://console.example.com"})
    other_port = await post(
        bridge, request("ping"), headers={"Origin": "https://console.example.com:8443"}
    )
    plain_http = await post(
        bridge, request("ping"), headers={"Origin": "http://console.example.com"}
    )
    loopback = await post(bridge, request("ping"), headers={"Origin": "http://localhost:5173"})
    no_origin = await post(bridge, request("ping"))

    assert rpc_result(allowed) == {}
    assert (other_port.status, plain_http.status, loopback.status) == (403, 403, 403)
    assert rpc_result(no_origin) == {}  # not a browser: nothing to rebind


async def test_two_origin_headers_are_refused(bridge: Bridge) -> None:
    port = bridge.session._base_url.port if bridge.session._base_url else None
    reply = await raw_mcp(
        bridge, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", "https://evil.example"
    )

    assert reply.startswith(b"HTTP/1.1 403 ")


# --- JSON-RPC framing -----------------------------------------------------------------------


async def test_notifications_and_client_responses_are_accepted_with_202_and_no_body(
    bridge: Bridge,
) -> None:
    messages = [
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        {"jsonrpc": "2.0", "method": "no/such/notification"},
        {"jsonrpc": "2.0", "id": 7, "result": {}},
        {"jsonrpc": "2.0", "id": "s-1", "error": {"code": -32601, "message": "no"}},
    ]
    for message in messages:
        reply = await post(bridge, message)

        assert reply.status == 202, message
        assert reply.raw == b"", message
    assert bridge.proxy.requests == 0


MALFORMED = [
    (b"{not json", -32700),
    (b"", -32700),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', -32700),
    (b"\xff\xfe", -32700),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600),
    (b"[]", -32600),
    (b'"ping"', -32600),
    (b"null", -32600),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
    (b'{"jsonrpc": 2.0, "id": 1, "method": "ping"}', -32600),
    (b'{"id": 1, "method": "ping"}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "params": {}}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": ""}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600),
    (b'{"jsonrpc": "2.0", "id": {"n": 1}, "method": "ping"}', -32600),
    (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}', -32600),
    # JSON-RPC allows a null id only on error responses; MCP: a request id MUST NOT be null.
    (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', -32600),
    (b'{"jsonrpc": "2.0", "method": "notifications/initialized", "params": 3}', -32602),
]


async def test_a_malformed_message_is_a_jsonrpc_error_with_http_400_and_a_null_id(
    bridge: Bridge,
) -> None:
    for data, code in MALFORMED:
        reply = await post(bridge, data=data)

        assert rpc_error(reply, 400)["code"] == code, data
    assert bridge.proxy.requests == 0


async def test_a_message_that_is_both_a_request_and_a_response_is_not_executed(
    bridge: Bridge,
) -> None:
    call = request("tools/call", {"name": "ticket.create", "arguments": COMPLETE_TICKET}, 9)
    extras: list[dict[str, Any]] = [{"result": {}}, {"error": {"code": -32601, "message": "no"}}]
    for extra in extras:
        reply = await post(bridge, {**call, **extra})

        assert rpc_error(reply, 400, 9)["code"] == -32600, extra
    assert bridge.proxy.requests == 0
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 0


async def test_params_that_are_not_an_object_are_32602_answering_the_requests_id(
    bridge: Bridge,
) -> None:
    for ident, params in ((1, []), ("a", "x"), (2, 3), (3, None)):
        reply = await post(
            bridge, {"jsonrpc": "2.0", "id": ident, "method": "ping", "params": params}
        )

        assert rpc_error(reply, 400, ident)["code"] == -32602, params
    assert bridge.proxy.requests == 0


async def test_an_unknown_method_is_32601_with_http_200_echoing_the_id(bridge: Bridge) -> None:
    reply = await post(bridge, request("resources/list", ident="req-9"))

    error = rpc_error(reply, 200, "req-9")
    assert error["code"] == -32601
    assert "resources/list" in error["message"]


async def test_string_and_integer_ids_are_echoed_verbatim(bridge: Bridge) -> None:
    for ident in ("", "a-b", 0, -1, 2**53):
        assert rpc_result(await post(bridge, request("ping", ident=ident)), ident) == {}


@pytest.mark.parametrize("bridge_overrides", [{"max_body_bytes": 4096}])
async def test_an_oversized_body_is_413_with_a_jsonrpc_error_sized_or_streamed(
    bridge: Bridge,
) -> None:
    body = request("tools/call", {"name": "ticket.create", "arguments": {"x": "y" * 4096}})
    data = orjson.dumps(body)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    sized = await post(bridge, data=data)
    headers = {"Authorization": f"Bearer {bridge.keys['supervisor']}"}
    async with bridge.session.post("/mcp", data=chunks(), headers=headers) as resp:
        streamed = Reply(resp.status, resp.headers, await resp.json(), b"")
    fits = await post(bridge, request("ping"))

    for reply in (sized, streamed):
        error = rpc_error(reply, 413)
        assert error["code"] == -32600
        assert "4096" in error["message"]
    assert rpc_result(fits) == {}
    assert bridge.proxy.requests == 0


# --- The handshake revisions ----------------------------------------------------------------


async def test_initialize_answers_the_clients_revision_when_spoken_else_the_latest(
    bridge: Bridge,
) -> None:
    cases: list[tuple[Any, str]] = [
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2024-01-01", "2025-11-25"),
        (MODERN, "2025-11-25"),
        (None, "2025-11-25"),
        (20250618, "2025-11-25"),
    ]
    for requested, answered in cases:
        params: dict[str, Any] = {"capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        if requested is not None:
            params["protocolVersion"] = requested

        result = rpc_result(await post(bridge, request("initialize", params)))

        assert result["protocolVersion"] == answered, requested
        # 2025-11-25 has tasks (for calls held for approval); 2025-06-18 has none.
        tasks: dict[str, Any] = {"tasks": {"cancel": {}, "requests": {"tools": {"call": {}}}}}
        expected = {"tools": {"listChanged": False}}
        assert result["capabilities"] == (
            {**expected, **tasks} if answered == "2025-11-25" else expected
        )
        assert result["serverInfo"]["name"] == "dispatch-bridge"
        assert result["instructions"]
        assert "resultType" not in result


async def test_after_the_handshake_ping_and_tools_list_answer_without_modern_fields(
    bridge: Bridge,
) -> None:
    header = {"MCP-Protocol-Version": "2025-06-18"}
    bare = await post(bridge, request("ping"))
    pinged = await post(bridge, request("ping"), headers=header)
    listed = rpc_result(await post(bridge, request("tools/list"), headers=header))

    assert rpc_result(bare) == {}
    assert rpc_result(pinged) == {}
    assert set(listed) == {"tools"}
    assert listed["tools"] == [mcp_tool(t) for t in catalog() if t.allowed("supervisor")]


async def test_an_unsupported_protocol_version_header_is_http_400(bridge: Bridge) -> None:
    # 2026-07-28 is supported, but only with its `_meta`: a bare request cannot speak it.
    for version in ("1999-01-01", "2025-03-26", "garbage", MODERN):
        reply = await post(bridge, request("ping"), headers={"MCP-Protocol-Version": version})

        assert rpc_error(reply, 400, 1)["code"] == -32600, version


async def test_a_handshake_tool_call_is_a_tool_result_and_errors_are_is_error(
    bridge: Bridge,
) -> None:
    header = {"MCP-Protocol-Version": "2025-11-25"}
    ok = await post(
        bridge, request("tools/call", {"name": "sla.status", "arguments": {}}), headers=header
    )
    bad = await post(
        bridge,
        request("tools/call", {"name": "ticket.create", "arguments": BAD_CREATE}),
        headers=header,
    )

    result = rpc_result(ok)
    assert result["isError"] is False
    assert orjson.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert "resultType" not in result
    envelope = tool_error(rpc_result(bad))
    assert envelope["error"]["code"] == "invalid_arguments"


# --- The stateless revision (2026-07-28) ----------------------------------------------------


async def test_server_discover_advertises_every_revision_tools_and_caching(
    bridge: Bridge,
) -> None:
    reply = await post(bridge, modern("server/discover"), headers=modern_headers("server/discover"))

    result = rpc_result(reply)
    assert set(ALL_VERSIONS) <= set(result["supportedVersions"])
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert isinstance(result["ttlMs"], int)
    assert result["ttlMs"] > 0
    assert result["cacheScope"] == "private"
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "dispatch-bridge"


async def test_a_modern_tools_list_carries_ttl_private_cache_scope_and_result_type(
    bridge: Bridge,
) -> None:
    supervisor = await post(bridge, modern("tools/list"), headers=modern_headers("tools/list"))
    technician = await post(
        bridge, modern("tools/list"), headers=modern_headers("tools/list"), as_="technician"
    )

    result = rpc_result(supervisor)
    assert [t["name"] for t in result["tools"]] == SUPERVISOR_TOOLS
    assert isinstance(result["ttlMs"], int)
    assert result["ttlMs"] > 0
    assert result["cacheScope"] == "private"
    assert result["resultType"] == "complete"
    technician_tools = [t["name"] for t in rpc_result(technician)["tools"]]
    assert technician_tools == [t.alias for t in catalog() if t.allowed("technician")]
    assert "ticket_cancel" not in technician_tools


async def test_a_modern_tool_call_is_a_complete_tool_result(bridge: Bridge) -> None:
    params = {"name": "sla.status", "arguments": {}}
    reply = await post(
        bridge, modern("tools/call", params), headers=modern_headers("tools/call", "sla.status")
    )

    result = rpc_result(reply)
    assert result["isError"] is False
    assert result["resultType"] == "complete"
    assert orjson.loads(result["content"][0]["text"]) == result["structuredContent"]


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


LIST = modern_headers("tools/list")
CALL = modern_headers("tools/call", "sla.status")


#: (what differs, method, headers) for requests whose headers do not mirror their body.
MISMATCHED = [
    ("version absent", "tools/list", _without(LIST, "MCP-Protocol-Version")),
    ("version different", "tools/list", {**LIST, "MCP-Protocol-Version": "2025-11-25"}),
    ("method absent", "tools/list", _without(LIST, "Mcp-Method")),
    ("method different", "tools/list", {**LIST, "Mcp-Method": "tools/call"}),
    ("discover sent as tools/list", "server/discover", LIST),
    ("name absent", "tools/call", _without(CALL, "Mcp-Name")),
    ("name different", "tools/call", {**CALL, "Mcp-Name": "ticket.get"}),
    ("base64 name different", "tools/call", {**CALL, "Mcp-Name": "=?base64?dGlja2V0LmdldA==?="}),
    ("name not base64", "tools/call", {**CALL, "Mcp-Name": "=?base64?not base64?="}),
    ("base64 name not UTF-8", "tools/call", {**CALL, "Mcp-Name": "=?base64?/w==?="}),
]


async def test_headers_that_do_not_mirror_the_body_are_32020_with_http_400(
    bridge: Bridge,
) -> None:
    for case, method, headers in MISMATCHED:
        params = {"name": "sla.status", "arguments": {}} if method == "tools/call" else None

        reply = await post(bridge, modern(method, params), headers=headers)

        assert rpc_error(reply, 400, 1)["code"] == -32020, case
    assert bridge.proxy.requests == 0


async def test_an_mcp_name_in_base64_encoded_word_form_is_decoded_and_accepted(
    bridge: Bridge,
) -> None:
    encoded = base64.b64encode(b"sla.status").decode()
    params = {"name": "sla.status", "arguments": {}}

    reply = await post(
        bridge,
        modern("tools/call", params),
        headers=modern_headers("tools/call", f"=?base64?{encoded}?="),
    )

    result = rpc_result(reply)
    assert result["isError"] is False
    assert result["resultType"] == "complete"
    assert orjson.loads(result["content"][0]["text"]) == result["structuredContent"]


async def test_a_non_ascii_tool_name_travels_base64_encoded_and_gets_past_the_header_check(
    bridge: Bridge,
) -> None:
    name = "ticket.tëlépört"
    encoded = base64.b64encode(name.encode()).decode()

    reply = await post(
        bridge,
        modern("tools/call", {"name": name, "arguments": {}}),
        headers=modern_headers("tools/call", f"=?base64?{encoded}?="),
    )

    error = rpc_error(reply, 200, 1)
    assert error["code"] == -32602
    assert name in error["message"]


async def test_modern_meta_missing_a_required_key_is_32602_with_http_400(
    bridge: Bridge,
) -> None:
    # Without the version key only server/discover is recognisably modern.
    cases = [
        ("tools/list", {META_VERSION: MODERN}),
        ("tools/call", {META_VERSION: MODERN}),
        ("server/discover", {META_CAPABILITIES: {}}),
        ("server/discover", None),
    ]
    for method, meta in cases:
        params: dict[str, Any] = {} if meta is None else {"_meta": meta}
        if method == "tools/call":
            params.update(name="sla.status", arguments={})
        headers = modern_headers(method, params.get("name"))

        reply = await post(bridge, request(method, params), headers=headers)

        assert rpc_error(reply, 400, 1)["code"] == -32602, (method, meta)


async def test_an_unsupported_modern_version_is_32022_naming_supported_and_requested(
    bridge: Bridge,
) -> None:
    body = request("tools/list", {"_meta": {META_VERSION: "2099-01-01", META_CAPABILITIES: {}}})
    headers = {"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"}

    error = rpc_error(await post(bridge, body, headers=headers), 400, 1)

    assert error["code"] == -32022
    assert error["data"] == {"supported": ALL_VERSIONS, "requested": "2099-01-01"}


async def test_ping_does_not_exist_in_the_stateless_revision(bridge: Bridge) -> None:
    reply = await post(bridge, modern("ping"), headers=modern_headers("ping"))

    assert rpc_error(reply, 200, 1)["code"] == -32601


async def test_an_unknown_tool_is_32602_listing_the_callers_tools(bridge: Bridge) -> None:
    params = {"name": "ticket.teleport", "arguments": {}}
    legacy = await post(bridge, request("tools/call", params), as_="technician")
    stateless = await post(
        bridge,
        modern("tools/call", params),
        headers=modern_headers("tools/call", "ticket.teleport"),
        as_="technician",
    )

    for reply in (legacy, stateless):
        error = rpc_error(reply, 200, 1)
        assert error["code"] == -32602
        assert error["data"]["available"] == [t.alias for t in catalog() if t.allowed("technician")]
    assert bridge.proxy.requests == 0


# --- Trace context in _meta -----------------------------------------------------------------


async def test_a_traceparent_in_meta_continues_the_callers_trace(bridge: Bridge) -> None:
    params = {
        "name": "ticket.create",
        "arguments": BAD_CREATE,
        "_meta": {"traceparent": TRACEPARENT},
    }
    legacy = await post(bridge, request("tools/call", params))
    stateless = await post(
        bridge,
        modern("tools/call", params, traceparent=TRACEPARENT, tracestate="vendor=1"),
        headers=modern_headers("tools/call", "ticket.create"),
    )

    for reply in (legacy, stateless):
        assert tool_error(rpc_result(reply))["trace_id"] == TRACE_ID


async def test_malformed_trace_context_in_meta_is_ignored_not_a_server_error(
    bridge: Bridge,
) -> None:
    metas: list[dict[str, Any]] = [
        {"traceparent": 1},
        {"traceparent": [TRACEPARENT]},
        {"traceparent": {"x": 1}},
        {"traceparent": None},
        {"traceparent": TRACEPARENT, "tracestate": 5},
        {"traceparent": TRACEPARENT, "baggage": ["a=b"]},
        {"traceparent": "not a traceparent", "baggage": "%%%"},
    ]
    for meta in metas:
        params = {"name": "ticket.create", "arguments": BAD_CREATE, "_meta": meta}

        reply = await post(bridge, request("tools/call", params))

        envelope = tool_error(rpc_result(reply))
        assert envelope["error"]["code"] == "invalid_arguments", meta
        # A usable string traceparent still continues the trace; anything else starts anew.
        continued = meta.get("traceparent") == TRACEPARENT
        assert (envelope["trace_id"] == TRACE_ID) is continued, meta


# --- Whatever arrives, the answer is JSON-RPC and never a 5xx -------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
methods = st.sampled_from(
    ["initialize", "ping", "tools/list", "tools/call", "server/discover", "notifications/x"]
)
tool_names = st.sampled_from(["sla.status", "ticket.get", "tech_complete", "nope"])
ids = st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
#: Trace context and a tool call id as an agent might send them, of any type.
trace_metas: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.fixed_dictionaries(
    {"traceparent": st.just(TRACEPARENT) | json_values},
    optional={
        "tracestate": st.just("vendor=1") | json_values,
        "baggage": st.just("k=v") | json_values,
        "dispatch-bridge.dev/toolCallId": st.just("call-1") | json_values,
    },
)
#: Anything shaped like a message, every member optional and of any type.
messages = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | json_values},
    optional={
        "id": json_values,
        "method": methods | json_values,
        "params": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "name": tool_names | json_values,
                "arguments": json_values,
                "_meta": json_values
                | st.fixed_dictionaries(
                    {},
                    optional={
                        META_VERSION: st.sampled_from([*ALL_VERSIONS, "2099-01-01"]) | json_values,
                        META_CAPABILITIES: json_values,
                    },
                ),
                "protocolVersion": st.sampled_from(ALL_VERSIONS) | json_values,
            },
        ),
        "result": json_values,
        "error": json_values,
    },
)
header_sets = st.fixed_dictionaries(
    {},
    optional={
        "MCP-Protocol-Version": st.sampled_from([*ALL_VERSIONS, "2099-01-01", ""]),
        "Mcp-Method": methods,
        "Mcp-Name": st.sampled_from(["sla.status", "=?base64?c2xhLnN0YXR1cw==?=", "=?base64?%?="]),
    },
)


@st.composite
def calls(draw: st.DrawFn) -> tuple[Any, dict[str, str]]:
    """A valid request (mostly tools/call) in either era, with consistent headers, whose
    arguments and trace context hold arbitrary values: these get past the framing into
    version negotiation, tracing and the pipeline."""
    method = draw(st.just("tools/call") | methods)
    name = draw(tool_names)
    meta = draw(trace_metas)
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        meta = {META_VERSION: MODERN, META_CAPABILITIES: draw(json_values), **meta}
        headers = modern_headers(method, name if method == "tools/call" else None)
    params = {"name": name, "arguments": draw(st.just({}) | json_values), "_meta": meta}
    return {"jsonrpc": "2.0", "id": draw(ids), "method": method, "params": params}, headers


@settings(
    max_examples=100,
    deadline=None,
    # The bridge fixture is shared by every example on purpose: the server must not care.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(exchange=st.tuples(json_values | messages, header_sets) | calls())
async def test_any_json_posted_gets_a_jsonrpc_answer_and_never_a_5xx(
    bridge: Bridge, exchange: tuple[Any, dict[str, str]]
) -> None:
    body, headers = exchange
    reply = await post(bridge, body, headers=headers)

    assert reply.status in (200, 202, 400), (reply.status, reply.raw)
    if reply.status == 202:
        assert reply.raw == b""
        return
    answer = orjson.loads(reply.raw)
    assert isinstance(answer, dict)
    assert set(answer) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"})
    assert answer["jsonrpc"] == "2.0"
    if _request_id(body) is not None:
        assert answer["id"] == _request_id(body)
    if "error" in answer:
        assert isinstance(answer["error"]["code"], int)
        assert isinstance(answer["error"]["message"], str)
    else:
        assert reply.status == 200
        assert isinstance(answer["result"], dict)


def _request_id(body: Any) -> str | int | None:
    """The id a well-framed request carries, which its answer must echo."""
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        return None
    ident, method = body.get("id"), body.get("method")
    if not (isinstance(method, str) and method):
        return None
    if isinstance(ident, str) or (type(ident) is int and -(2**63) <= ident < 2**64):
        return ident
    return None
