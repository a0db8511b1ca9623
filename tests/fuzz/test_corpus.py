"""Hostile input against both services, REST and MCP.

Each item of the corpus gets a precise answer: the exact 4xx status and error code (a
problem document, a tool envelope, a JSON-RPC error, or an `isError` tool result), never a
5xx. Each group runs twice: afterwards the database is exactly as before (row counts and a
digest of every row of every table), no request was logged with a 5xx, and the second pass
added no metric series to either service (the first may add the series of a refusal's code,
never one per input).
"""

from __future__ import annotations

import asyncio
import io
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import ClientSession
from multidict import CIMultiDict

from dispatch_api.store import connect
from schemas import MAX_JSON_DEPTH
from testkit.api import COMPLETE_TICKET, Reply

from .conftest import Bridge

#: Every table a request could write.
TABLES = ("tickets", "timeline_events", "evidence", "idempotency_keys", "principals")
#: A refusal never echoes hostile input at length.
MAX_REFUSAL_BYTES = 8192
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
JSON = "application/json"
SHA = "0" * 64

Check = Callable[[Reply], None]


@dataclass(frozen=True)
class Probe:
    """One hostile request and the precise answer it must get."""

    label: str
    send: Callable[[], Awaitable[Reply]]
    check: Check


# --- what the answers must be -----------------------------------------------------------


def _small(reply: Reply) -> None:
    assert len(reply.raw) <= MAX_REFUSAL_BYTES, f"{len(reply.raw)} bytes: {reply.raw[:300]!r}"


def problem(status: int, code: str, at: str | None = None, **members: Any) -> Check:
    """A problem+json document (either service) of `status` and `code`, naming the field
    `at` among its errors, with these extension `members`."""

    def check(reply: Reply) -> None:
        assert reply.status == status, (reply.status, reply.raw[:500])
        assert reply.content_type == "application/problem+json", reply.headers
        assert (reply.body["status"], reply.body["code"]) == (status, code), reply.body
        if at is not None:
            assert [e["path"] for e in reply.body["errors"]] == [at], reply.body
        for name, value in members.items():
            assert reply.body[name] == value, (name, reply.body)
        _small(reply)

    return check


def envelope(status: int, code: str, path: str | None = None) -> Check:
    """The bridge's REST envelope with `ok: false` and `error.code`."""

    def check(reply: Reply) -> None:
        assert reply.status == status, (reply.status, reply.raw[:500])
        assert reply.content_type == JSON
        assert reply.body["ok"] is False
        assert reply.body["error"]["code"] == code, reply.body
        if path is not None:
            assert path in _error_paths(reply.body["error"]), reply.body
        _small(reply)

    return check


def rpc_error(status: int, code: int) -> Check:
    """A JSON-RPC error object, on HTTP `status`."""

    def check(reply: Reply) -> None:
        assert reply.status == status, (reply.status, reply.raw[:500])
        assert reply.content_type == JSON
        assert reply.body["jsonrpc"] == "2.0"
        assert reply.body["error"]["code"] == code, reply.body
        _small(reply)

    return check


def tool_error(code: str, path: str | None = None) -> Check:
    """An MCP tool result with `isError: true` carrying the envelope of `code`."""

    def check(reply: Reply) -> None:
        assert reply.status == 200, (reply.status, reply.raw[:500])
        result = reply.body["result"]
        assert result["isError"] is True, result
        inner = orjson.loads(result["content"][0]["text"])
        assert inner["error"]["code"] == code, inner
        if path is not None:
            assert path in _error_paths(inner["error"]), inner
        _small(reply)

    return check


def parser_refusal(reply: Reply) -> None:
    """aiohttp's HTTP parser refused the request before any of our code ran."""
    assert reply.status in (400, 413, 414, 431), (reply.status, reply.raw[:300])
    assert "X-Correlation-ID" not in reply.headers  # our middleware never saw it
    assert "Set-Cookie" not in reply.headers
    assert "X-Injected" not in reply.headers


def _error_paths(error: Mapping[str, Any]) -> set[str]:
    return {e["path"] for e in error.get("details", {}).get("errors", [])}


# --- how to send them -------------------------------------------------------------------


async def _reply(session: ClientSession, method: str, path: str, **kw: Any) -> Reply:
    data = kw.get("data")
    if isinstance(data, bytes) and len(data) > 1024 * 1024:
        kw["data"] = io.BytesIO(data)  # aiohttp streams it instead of blocking the loop
    async with session.request(method, path, **kw) as resp:
        raw = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        body = orjson.loads(raw) if "json" in ctype and raw else None
        return Reply(resp.status, resp.headers, body, raw)


class Targets:
    """dispatch-api, the bridge's REST and its MCP endpoint, as a supervisor."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.api = bridge.api
        self.api_auth = {"Authorization": f"Bearer {self.api.tokens['supervisor']}"}
        self.bridge_auth = {"Authorization": f"Bearer {bridge.keys['supervisor']}"}

    def api_post(
        self, path: str, data: bytes, ctype: str | None = JSON, **headers: str
    ) -> Callable[[], Awaitable[Reply]]:
        """A POST to dispatch-api with a fresh Idempotency-Key each time it is sent."""

        async def send() -> Reply:
            sent = {**self.api_auth, "Idempotency-Key": str(uuid.uuid4()), **headers}
            if ctype is not None:
                sent["Content-Type"] = ctype
            return await _reply(self.api.session, "POST", path, data=data, headers=sent)

        return send

    def api_get(self, path: str, **headers: str) -> Callable[[], Awaitable[Reply]]:
        return lambda: _reply(self.api.session, "GET", path, headers={**self.api_auth, **headers})

    def invoke(
        self, tool: str, data: bytes, ctype: str | None = JSON, **headers: str
    ) -> Callable[[], Awaitable[Reply]]:
        sent = {**self.bridge_auth, **headers}
        if ctype is not None:
            sent["Content-Type"] = ctype
        path = f"/v1/tools/{tool}/invoke"
        return lambda: _reply(self.bridge.session, "POST", path, data=data, headers=sent)

    def mcp(
        self, data: bytes, ctype: str | None = JSON, **headers: str
    ) -> Callable[[], Awaitable[Reply]]:
        sent = {**self.bridge_auth, **MCP_HEADERS, **headers}
        if ctype is not None:
            sent["Content-Type"] = ctype
        return lambda: _reply(self.bridge.session, "POST", "/mcp", data=data, headers=sent)

    def raw(self, service: str, head: bytes, body: bytes = b"") -> Callable[[], Awaitable[Reply]]:
        """Bytes on a socket, for what no HTTP client library will send."""
        session = self.api.session if service == "api" else self.bridge.session
        assert session._base_url is not None
        port = session._base_url.port
        assert port is not None

        async def send() -> Reply:
            return await asyncio.wait_for(_raw_exchange(port, head, body), 10)

        return send


async def _raw_exchange(port: int, head: bytes, body: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = f"Content-Length: {len(body)}\r\n".encode()
        writer.write(head + length + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head_bytes, _, raw = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    ctype = headers.get("Content-Type", "")
    body_json = orjson.loads(raw) if "json" in ctype and raw else None
    return Reply(int(status_line.split()[1]), headers, body_json, raw)


def rpc_call(tool: Any, arguments: Any, **meta: Any) -> bytes:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})


def rest_call(arguments: Any) -> bytes:
    return orjson.dumps({"arguments": arguments})


# --- the guard around each group ----------------------------------------------------------


async def database_state(bridge: Bridge) -> dict[str, tuple[int, str]]:
    """Per table: row count and an md5 over every row's text, in a stable order."""
    conn = await connect(bridge.api.database_url)
    try:
        state = {}
        for table in TABLES:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text),"
                f" '')) AS digest FROM {table} t"
            )
            assert row is not None  # an aggregate: always one row
            state[table] = (row["n"], row["digest"])
        return state
    finally:
        await conn.close()


async def metric_series(bridge: Bridge) -> dict[str, set[str]]:
    """The series (name and labels, without values) each service exposes now."""
    found = {}
    for service, session in (("api", bridge.api.session), ("bridge", bridge.session)):
        reply = await _reply(session, "GET", "/metrics")
        assert reply.status == 200
        lines = reply.raw.decode().splitlines()
        found[service] = {line.rsplit(" ", 1)[0] for line in lines if not line.startswith("#")}
    return found


def server_errors(log_lines: list[bytes]) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in log_lines]
    return [
        line
        for line in lines
        if (line.get("status_code") or 0) >= 500 or line.get("error_code") == "internal"
    ]


async def run(probes: Iterable[Probe]) -> None:
    for probe in probes:
        reply = await probe.send()
        try:
            probe.check(reply)
        except AssertionError as exc:
            raise AssertionError(f"{probe.label}: {exc}") from None


async def assert_harmless(bridge: Bridge, log_lines: list[bytes], probes: list[Probe]) -> None:
    """Every probe answered precisely, twice; nothing stored; no new series the second time."""
    before = await database_state(bridge)
    await metric_series(bridge)  # a scrape is counted too: its own series exist from here on
    await run(probes)
    warm = await metric_series(bridge)
    await run(probes)

    assert await database_state(bridge) == before
    assert await metric_series(bridge) == warm
    assert server_errors(log_lines) == []


# --- the corpus ---------------------------------------------------------------------------


def deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def in_field(value: bytes) -> tuple[bytes, bytes, bytes]:
    """The raw JSON text `value` as customer_name: of a ticket (dispatch-api), of the
    ticket.create arguments (REST), and of a tools/call (MCP)."""
    return (
        b'{"customer_name": ' + value + b"}",
        b'{"arguments": {"customer_name": ' + value + b"}}",
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ticket.create",'
        b' "arguments": {"customer_name": ' + value + b"}}}",
    )


def each(
    bodies: tuple[bytes, bytes, bytes], change: Callable[[bytes], bytes]
) -> tuple[bytes, bytes, bytes]:
    return change(bodies[0]), change(bodies[1]), change(bodies[2])


def body_probes(t: Targets) -> list[Probe]:
    """Malformed, truncated, deep, huge, NUL, invalid UTF-8, and bodies whose type lies."""
    not_json = (
        problem(400, "invalid_json"),
        envelope(422, "invalid_arguments"),
        rpc_error(400, -32700),
    )
    refused_field = (
        problem(422, "validation_failed", "/customer_name"),
        envelope(422, "invalid_arguments", "/customer_name"),
        tool_error("invalid_arguments", "/customer_name"),
    )
    cases: list[tuple[str, tuple[bytes, bytes, bytes], str | None, tuple[Check, Check, Check]]]
    cases = [
        # Whole documents that are not JSON.
        (
            "truncated",
            (
                b'{"customer_name": "Ada", "prio',
                b'{"arguments": {"customer_name": "Ada"',
                b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "tic',
            ),
            JSON,
            not_json,
        ),
        (
            "unquoted keys",
            (b"{customer_name: 'Ada'}", b"{arguments: {}}", b"{jsonrpc: 2}"),
            JSON,
            not_json,
        ),
        (
            "trailing garbage",
            (b'{"priority": "P1"} {', b'{"arguments": {}}}', b'{"id": 1} x'),
            JSON,
            not_json,
        ),
        (
            "byte order mark",
            each(in_field(b'"Ada"'), lambda b: b"\xef\xbb\xbf" + b),
            JSON,
            not_json,
        ),
        ("UTF-16", each(in_field(b'"Ada"'), lambda b: b.decode().encode("utf-16")), JSON, not_json),
        (
            "form body labelled JSON",
            (b"customer_name=Ada", b"arguments=%7B%7D", b"id=1"),
            JSON,
            not_json,
        ),
        # Values the parser refuses, in a field.
        ("NaN", in_field(b"NaN"), JSON, not_json),
        ("number beyond a double", in_field(b"-1e400"), JSON, not_json),
        ("raw NUL byte in a string", in_field(b'"A\x00da"'), JSON, not_json),
        ("invalid UTF-8", in_field(b'"\xc3\x28\xff"'), JSON, not_json),
        ("lone surrogate", in_field(b'"\\ud800"'), JSON, not_json),
        ("nested past the parser", in_field(b"[" * 10_000), JSON, not_json),
        ("nested 1000 levels", in_field(b"[" * 1000 + b"]" * 1000), JSON, not_json),
        # Values that parse, and no field takes.
        ("NUL escaped in a string", in_field(b'"A\\u0000da"'), JSON, refused_field),
        (
            f"nested {MAX_JSON_DEPTH - 8} levels",
            in_field(orjson.dumps(deep(MAX_JSON_DEPTH - 8))),
            JSON,
            refused_field,
        ),
        ("integer past 64 bits", in_field(b"123456789012345678901234567890"), JSON, refused_field),
        ("largest double", in_field(b"1.7976931348623157e308"), JSON, refused_field),
        (
            # Within each body limit (64 KiB but for evidence), and not echoed.
            "huge string",
            in_field(b'"' + b"x" * 60_000 + b'"'),
            JSON,
            refused_field,
        ),
        (
            "body over the limit",
            (
                in_field(b'"' + b"x" * 70_000 + b'"')[0],
                *in_field(b'"' + b"x" * (9 * 1024 * 1024) + b'"')[1:],
            ),
            JSON,
            (
                problem(413, "payload_too_large"),
                envelope(413, "invalid_arguments"),
                rpc_error(413, -32600),
            ),
        ),
    ]
    # Content types that lie about a well-formed body that would otherwise create a ticket.
    valid = (
        orjson.dumps(COMPLETE_TICKET),
        rest_call(COMPLETE_TICKET),
        rpc_call("ticket.create", COMPLETE_TICKET),
    )
    lying = (
        problem(415, "unsupported_media_type"),
        envelope(415, "invalid_arguments"),
        rpc_error(415, -32600),
    )
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "image/png",
        "application/xml",
        None,
    ):
        cases.append((f"JSON sent as {ctype}", valid, ctype, lying))

    probes = []
    for label, (api_raw, rest_raw, mcp_raw), ctype, (api_check, rest_check, mcp_check) in cases:
        probes += [
            Probe(f"api {label}", t.api_post("/v1/tickets", api_raw, ctype), api_check),
            Probe(f"REST {label}", t.invoke("ticket.create", rest_raw, ctype), rest_check),
            Probe(f"MCP {label}", t.mcp(mcp_raw, ctype), mcp_check),
        ]
    return probes


async def test_bad_bodies_get_precise_4xx_and_change_nothing(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    t = Targets(bridge)

    await assert_harmless(bridge, log_lines, body_probes(t))

    assert bridge.proxy.requests == 0  # every one refused at the bridge, none forwarded


def sql_probes(t: Targets, ticket_id: str) -> list[Probe]:
    """SQL metacharacters where an id, an enum, a number or a name is expected."""
    drop = "'; DROP TABLE tickets;--"
    quoted = "1' OR '1'='1"
    return [
        Probe(
            "api path id",
            t.api_get("/v1/tickets/%27%3B%20DROP%20TABLE%20tickets%3B--"),
            problem(400, "invalid_id"),
        ),
        Probe(
            "api state filter",
            t.api_get("/v1/tickets?state=NEW%27%20OR%20%271%27%3D%271"),
            problem(400, "invalid_query", parameter="state"),
        ),
        Probe(
            "api technician filter",
            t.api_get("/v1/tickets?technician_id=x%27%20OR%201%3D1--"),
            problem(400, "invalid_query", parameter="technician_id"),
        ),
        Probe(
            "api cursor",
            t.api_get("/v1/tickets?cursor=%27%20OR%201%3D1--"),
            problem(400, "invalid_query", parameter="cursor"),
        ),
        # Not SQL, but as quiet: an empty filter once meant "no filter" (found by make fuzz).
        Probe(
            "api empty priority",
            t.api_get("/v1/tickets?priority="),
            problem(400, "invalid_query", parameter="priority"),
        ),
        Probe(
            "api trailing comma",
            t.api_get("/v1/tickets?state=NEW,"),
            problem(400, "invalid_query", parameter="state"),
        ),
        Probe(
            "api limit",
            t.api_get("/v1/tickets?limit=1%3BDELETE%20FROM%20tickets"),
            problem(400, "invalid_query", parameter="limit"),
        ),
        Probe(
            "api incident type",
            t.api_post("/v1/tickets", orjson.dumps({**COMPLETE_TICKET, "incident_type": quoted})),
            problem(422, "validation_failed", "/incident_type"),
        ),
        Probe(
            "api technician id",
            t.api_post(
                f"/v1/tickets/{ticket_id}/schedule",
                orjson.dumps(
                    {
                        "technician_id": "t'; UPDATE tickets SET state='COMPLETED';--",
                        "window_start": "2030-01-07T13:00:00Z",
                        "window_end": "2030-01-07T15:00:00Z",
                    }
                ),
            ),
            problem(422, "validation_failed", "/technician_id"),
        ),
        Probe(
            "api idempotency key",
            t.api_post(
                "/v1/tickets",
                orjson.dumps(COMPLETE_TICKET),
                **{"Idempotency-Key": "k'; DELETE FROM idempotency_keys;--"},
            ),
            problem(400, "invalid_header", header="Idempotency-Key"),
        ),
        Probe(
            "REST ticket id",
            t.invoke("ticket.get", rest_call({"ticket_id": quoted})),
            envelope(422, "invalid_arguments", "/ticket_id"),
        ),
        Probe(
            "REST state",
            t.invoke("queue.view", rest_call({"state": [f"NEW{drop}"]})),
            envelope(422, "invalid_arguments"),
        ),
        Probe(
            "REST tool name",
            t.invoke(
                "ticket.get%27%3B%20DROP%20TABLE%20tickets%3B--",
                rest_call({"ticket_id": ticket_id}),
            ),
            envelope(404, "unknown_tool"),
        ),
        Probe(
            "REST tool_call_id",
            t.invoke(
                "ticket.get",
                orjson.dumps({"arguments": {"ticket_id": ticket_id}, "tool_call_id": f"x{drop}"}),
            ),
            envelope(422, "invalid_arguments", "/tool_call_id"),
        ),
        Probe("MCP tool name", t.mcp(rpc_call(drop, {})), rpc_error(200, -32602)),
        Probe(
            "MCP ticket id",
            t.mcp(rpc_call("ticket.get", {"ticket_id": quoted})),
            tool_error("invalid_arguments", "/ticket_id"),
        ),
        Probe(
            "MCP tool call id",
            t.mcp(
                rpc_call(
                    "ticket.get",
                    {"ticket_id": ticket_id},
                    **{"dispatch-bridge.dev/toolCallId": f"x{drop}"},
                )
            ),
            tool_error("invalid_arguments", "/tool_call_id"),
        ),
    ]


async def test_sql_metacharacters_in_ids_names_and_filters_are_refused_and_change_nothing(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    ticket = await bridge.api.create_ticket()
    t = Targets(bridge)
    forwarded = bridge.proxy.requests

    await assert_harmless(bridge, log_lines, sql_probes(t, ticket["id"]))

    assert bridge.proxy.requests == forwarded


async def test_sql_in_free_text_is_stored_verbatim_and_touches_nothing_else(
    bridge: Bridge,
) -> None:
    # Free text is data, not a refusal: it must come back byte for byte, and be inert.
    text = "Robert'); DROP TABLE tickets;-- \\\" $$ ; DELETE FROM principals WHERE '1'='1"
    before = await database_state(bridge)

    created = await bridge.invoke("ticket.create", {**COMPLETE_TICKET, "customer_name": text})
    read = await bridge.invoke("ticket.get", {"ticket_id": created.body["result"]["ticket"]["id"]})

    assert read.body["result"]["ticket"]["customer_name"] == text
    after = await database_state(bridge)
    assert after["principals"] == before["principals"]
    assert after["tickets"][0] == before["tickets"][0] + 1


def header_probes(t: Targets) -> list[Probe]:
    """CRLF and other bytes in X-Correlation-ID, oversized and too many headers, on requests
    that would otherwise create a ticket (so a refusal is what kept the database as it was)."""
    api_auth = f"Authorization: Bearer {t.api.tokens['supervisor']}\r\n".encode()
    bridge_auth = f"Authorization: Bearer {t.bridge.keys['supervisor']}\r\n".encode()
    targets = {
        "api": (
            b"POST /v1/tickets HTTP/1.1\r\nHost: api\r\n"
            + api_auth
            + b"Content-Type: application/json\r\n",
            orjson.dumps(COMPLETE_TICKET),
        ),
        "REST": (
            b"POST /v1/tools/ticket.create/invoke HTTP/1.1\r\nHost: b\r\n"
            + bridge_auth
            + b"Content-Type: application/json\r\n",
            rest_call(COMPLETE_TICKET),
        ),
        "MCP": (
            b"POST /mcp HTTP/1.1\r\nHost: b\r\n"
            + bridge_auth
            + b"Content-Type: application/json\r\n",
            rpc_call("ticket.create", COMPLETE_TICKET),
        ),
    }
    parser_level = {
        "bare CR": b"X-Correlation-ID: a\rX-Injected: 1\r\n",
        "bare LF": b"X-Correlation-ID: a\nX-Injected: 1\r\n",
        "obs-fold": b"X-Correlation-ID: a\r\n X-Injected: 1\r\n",
        "NUL": b"X-Correlation-ID: a\x00b\r\n",
        "oversized header": b"X-Correlation-ID: " + b"a" * 9000 + b"\r\n",
        "too many headers": b"".join(b"X-Filler-%d: 1\r\n" % i for i in range(200)),
    }
    ours = {
        "encoded CRLF": b"X-Correlation-ID: a%0d%0aX-Injected:%201\r\n",
        "Latin-1 byte": b"X-Correlation-ID: caf\xe9\r\n",
        "invalid UTF-8": b"X-Correlation-ID: a\xc3\x28\r\n",
        "space": b"X-Correlation-ID: a b\r\n",
        "129 characters": b"X-Correlation-ID: " + b"a" * 129 + b"\r\n",
    }
    probes = []
    for target, (head, body) in targets.items():
        service = "api" if target == "api" else "bridge"
        for label, extra in parser_level.items():
            send = t.raw(service, head + extra + idempotency(target), body)
            probes.append(Probe(f"{target} {label}", send, parser_refusal))
        if target == "api":
            probes.append(
                Probe(
                    "api oversized URL",
                    t.raw(
                        service,
                        b"GET /v1/tickets?x="
                        + b"a" * 9000
                        + b" HTTP/1.1\r\nHost: api\r\n"
                        + api_auth,
                    ),
                    parser_refusal,
                )
            )
        code = "invalid_header" if target == "api" else "invalid_arguments"
        for label, extra in ours.items():
            send = t.raw(service, head + extra + idempotency(target), body)
            probes.append(
                Probe(
                    f"{target} {label}",
                    send,
                    fresh_ids(problem(400, code, header="X-Correlation-ID")),
                )
            )
    return probes


def idempotency(target: str) -> bytes:
    return f"Idempotency-Key: {uuid.uuid4()}\r\n".encode() if target == "api" else b""


def fresh_ids(check: Check) -> Check:
    """`check`, and the ids echoed are minted ones: nothing of the refused header comes back."""

    def both(reply: Reply) -> None:
        check(reply)
        uuid.UUID(reply.headers["X-Correlation-ID"])
        assert "X-Injected" not in reply.headers

    return both


async def test_crlf_and_oversized_headers_are_refused_and_change_nothing(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    await assert_harmless(bridge, log_lines, header_probes(Targets(bridge)))

    assert bridge.proxy.requests == 0


#: Trace context a gateway could mangle. W3C Trace Context says a traceparent that does not
#: parse is ignored and a new trace started, never refused: refusing would fail an agent's
#: call for its tracing. So these are read-only calls that must succeed on a new trace.
BAD_TRACEPARENTS = {
    "garbage": "zz",
    "all-zero trace id": f"00-{'0' * 32}-00f067aa0ba902b7-01",
    "all-zero span id": f"00-4bf92f3577b34da6a3ce929d0e0e4736-{'0' * 16}-01",
    "version ff": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "upper-case hex": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    "short trace id": "00-4bf92f35-00f067aa0ba902b7-01",
    "SQL": "00-'; DROP TABLE tickets;--",
    "8000 characters": "00-" + "a" * 7997,
}
HOSTILE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def new_trace(check: Check) -> Check:
    def both(reply: Reply) -> None:
        check(reply)
        trace_id = reply.body["trace_id"]
        assert isinstance(trace_id, str), reply.body
        assert len(trace_id) == 32, trace_id
        assert trace_id != "0" * 32
        assert trace_id != HOSTILE_TRACE_ID
        int(trace_id, 16)

    return both


def succeeded(reply: Reply) -> None:
    assert reply.status == 200, (reply.status, reply.raw[:500])


def mcp_succeeded(reply: Reply) -> None:
    succeeded(reply)
    assert reply.body["result"]["isError"] is False, reply.body


def trace_probes(t: Targets, ticket_id: str) -> list[Probe]:
    probes = []
    get = rest_call({"ticket_id": ticket_id})
    for label, value in BAD_TRACEPARENTS.items():
        probes += [
            Probe(f"api {label}", t.api_get("/v1/tickets", traceparent=value), succeeded),
            Probe(
                f"REST {label}",
                t.invoke("ticket.get", get, traceparent=value),
                new_trace(succeeded),
            ),
            Probe(
                f"MCP header {label}",
                t.mcp(rpc_call("ticket.get", {"ticket_id": ticket_id}), traceparent=value),
                mcp_succeeded,
            ),
            Probe(
                f"MCP _meta {label}",
                t.mcp(
                    rpc_call(
                        "ticket.get",
                        {"ticket_id": ticket_id},
                        traceparent=value,
                        tracestate="x" * 600,
                    )
                ),
                mcp_succeeded,
            ),
            # With a bad body too, the answer is the precise refusal of the body.
            Probe(
                f"api {label} and a bad body",
                t.api_post("/v1/tickets", b"{", traceparent=value),
                problem(400, "invalid_json"),
            ),
            Probe(
                f"REST {label} and a bad body",
                t.invoke("ticket.get", b"{", traceparent=value),
                new_trace(envelope(422, "invalid_arguments")),
            ),
        ]
    return probes


async def test_an_invalid_traceparent_is_ignored_and_a_new_trace_started(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    ticket = await bridge.api.create_ticket()

    await assert_harmless(bridge, log_lines, trace_probes(Targets(bridge), ticket["id"]))


#: Evidence references that point at the local file system, at script, at plain HTTP, or
#: outside the intended path (dot segments, also percent-encoded or behind an encoded slash).
HOSTILE_URIS = (
    "file:///etc/passwd",
    "javascript:alert(document.cookie)",
    "data:image/png;base64,iVBORw0KGgo=",
    "http://evidence.example/1.png",
    "ftp://evidence.example/1.png",
    "HTTPS://evidence.example/1.png",
    "https://evidence.example/../../etc/passwd",
    "https://evidence.example/photos/..",
    "https://evidence.example/./1.png",
    "s3://bucket/%2e%2e/%2E%2E/secrets",
    "s3://bucket/.%2e/x",
    "gs://bucket/a/..%2f..%2fetc",
    "https://evidence.example/a%5c..%5cb",
    "https://evidence.example\\..\\windows",
    "https://user:secret@evidence.example/1.png",
    "https:///etc/passwd",
    "https://../etc/passwd",
    "https://evidence.example/a b.png",
    "https://evidence.example/a\u0000.png",
    "https://evidence.example/\r\nX-Injected: 1",
)


def evidence_probes(t: Targets, ticket_id: str) -> list[Probe]:
    probes = []
    for uri in HOSTILE_URIS:
        attach = {
            "kind": "photo",
            "tag": "before",
            "content_type": "image/png",
            "uri": uri,
            "sha256": SHA,
            "size_bytes": 10,
        }
        probes += [
            Probe(
                f"api {uri!r}",
                t.api_post(f"/v1/tickets/{ticket_id}/evidence", orjson.dumps(attach)),
                problem(422, "validation_failed", "/uri"),
            ),
            Probe(
                f"REST {uri!r}",
                t.invoke("evidence.attach", rest_call({"ticket_id": ticket_id, **attach})),
                envelope(422, "invalid_arguments", "/uri"),
            ),
            Probe(
                f"MCP {uri!r}",
                t.mcp(rpc_call("evidence.attach", {"ticket_id": ticket_id, **attach})),
                tool_error("invalid_arguments", "/uri"),
            ),
        ]
    return probes


async def test_evidence_uris_outside_https_s3_gs_or_with_traversal_are_refused(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    ticket = await bridge.api.create_ticket()
    forwarded = bridge.proxy.requests

    await assert_harmless(bridge, log_lines, evidence_probes(Targets(bridge), ticket["id"]))

    assert bridge.proxy.requests == forwarded


def nasty_names(count: int) -> list[str]:
    """Tool names no catalog has: random ones, and ones built to hurt a label or a log."""
    names = [f"zq{secrets.token_hex(6)}.{secrets.token_hex(3)}" for _ in range(count - 8)]
    hostile = ["ticket.get\u0000", "tîcket.gét", "../../etc/passwd", "ticket.get'--", "x" * 5000]
    return [*names, *hostile, "ticket.get\r\nX-Injected: 1", "%7B%7D", ""]


async def test_unknown_tool_names_by_the_thousand_are_refused_and_add_no_series(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    t = Targets(bridge)
    before = await database_state(bridge)
    await metric_series(bridge)
    # One of each refusal first: its code's series may appear now, and never again.
    await run(unknown_tool_probes(t, nasty_names(10)))
    warm = await metric_series(bridge)
    names = nasty_names(1000)

    for start in range(0, len(names), 100):
        batch = unknown_tool_probes(t, names[start : start + 100])
        await asyncio.wait_for(asyncio.gather(*(run([probe]) for probe in batch)), 60)

    after = await metric_series(bridge)
    assert after == warm
    labels = " ".join(after["bridge"] | after["api"])
    assert not [name for name in names[:-8] if name.split(".")[0] in labels]
    assert await database_state(bridge) == before
    assert bridge.proxy.requests == 0
    assert server_errors(log_lines) == []


def unknown_tool_probes(t: Targets, names: list[str]) -> list[Probe]:
    probes = []
    for name in names:
        probes.append(
            Probe(f"MCP {name[:40]!r}", t.mcp(rpc_call(name, {})), rpc_error(200, -32602))
        )
        path = quote(name, safe="")
        if name and len(path) < 8000:
            probes.append(
                Probe(
                    f"REST {name[:40]!r}",
                    t.invoke(path, rest_call({})),
                    envelope(404, "unknown_tool"),
                )
            )
    return probes
