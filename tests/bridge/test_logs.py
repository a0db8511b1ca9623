"""JSON logs: one line per request, every field present, no secret ever written."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import uuid
from collections.abc import Iterator

import orjson
import pytest

from telemetry import FIELDS, JsonFormatter
from testkit.api import COMPLETE_TICKET, WINDOW, parsed_logs

from .conftest import Bridge

EVIDENCE_MARKER = b"inline-evidence-content-4c1f9e-do-not-log"


async def test_every_line_is_json_with_every_field_and_one_line_per_request(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    log_lines.clear()
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    await bridge.invoke("ticket.get", {"ticket_id": created.body["result"]["ticket"]["id"]})
    await bridge.request("GET", "/healthz", as_="")
    await bridge.api.request("GET", "/v1/templates")

    lines = parsed_logs(log_lines)
    assert lines
    for line in lines:
        assert all(name in line for name in FIELDS), set(FIELDS) - set(line)
    requests = [
        (line["service"], line["endpoint"]) for line in lines if line["event"] == "http_request"
    ]
    assert sorted(requests) == sorted(
        [
            ("bridge", "/v1/tools/{name}/invoke"),
            ("bridge", "/v1/tools/{name}/invoke"),
            ("bridge", "/healthz"),
            ("dispatch-api", "/v1/tickets"),
            ("dispatch-api", "/v1/tickets/{ticket_id}"),
            ("dispatch-api", "/v1/templates"),
        ]
    )
    # Each call was answered by its first try: its request line tells the try, no line more.
    assert not [line for line in lines if line["event"] == "upstream_attempt"]
    calls = [line for line in lines if line["endpoint"] == "/v1/tools/{name}/invoke"]
    assert [(line["tool_name"], line["attempt"]) for line in calls] == [
        ("ticket.create", 1),
        ("ticket.get", 1),
    ]
    assert all(line["upstream_latency_ms"] <= line["latency_ms"] for line in calls)


async def test_each_try_of_a_retried_call_logs_its_attempt(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.drop_responses = 1
    log_lines.clear()

    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})

    attempts = [line for line in parsed_logs(log_lines) if line["event"] == "upstream_attempt"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "TransportFailure"),
        (2, "ok"),
    ]
    assert {a["request_id"] for a in attempts} == {reply.body["request_id"]}
    assert attempts[0]["level"] == "warning"
    # Its tries have lines of their own, so its request line claims none of them.
    (line,) = [
        line
        for line in parsed_logs(log_lines)
        if line["event"] == "http_request"
        and line["request_id"] == reply.body["request_id"]
        and line["service"] == "bridge"
    ]
    assert "attempt" not in line


async def test_secrets_never_reach_any_log_line(
    bridge: Bridge,
    log_lines: list[bytes],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    api = bridge.api
    secrets = [
        *bridge.keys.values(),
        *api.tokens.values(),
        "Bearer not-a-real-token-9d1e",
        base64.b64encode(EVIDENCE_MARKER).decode(),
        EVIDENCE_MARKER.decode(),
        api.database_url,
    ]
    # Every bridge route, with and without valid keys.
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    for tool, args in (
        ("ticket.schedule", {"ticket_id": tid, **WINDOW}),
        ("ticket.dispatch", {"ticket_id": tid}),
        ("tech.arrive", {"ticket_id": tid}),
        ("tech.complete", {"ticket_id": tid}),
        (
            "evidence.attach",
            {
                "ticket_id": tid,
                "kind": "photo",
                "tag": "before",
                "content_type": "image/png",
                "content_base64": base64.b64encode(EVIDENCE_MARKER).decode(),
            },
        ),
        ("ticket.timeline", {"ticket_id": tid}),
        ("queue.view", {}),
        ("ticket.teleport", {}),
    ):
        await bridge.invoke(tool, args)
    await bridge.invoke(
        "ticket.get",
        {"ticket_id": tid},
        as_="",
        headers={"Authorization": "Bearer not-a-real-token-9d1e"},
    )
    for path in ("/v1/tools", "/v1/config", "/v1/ops/inflight", "/readyz", "/metrics", "/nope"):
        await bridge.request("GET", path)
    # Every dispatch-api route family, directly, as each principal and with a bad token.
    for who in api.tokens:
        await api.request("GET", f"/v1/tickets/{tid}", as_=who)
    await api.request(
        "GET", "/v1/tickets", as_="", headers={"Authorization": "Bearer not-a-real-token-9d1e"}
    )
    evidence = (await api.request("GET", f"/v1/tickets/{tid}/evidence")).body["items"][0]
    await api.request("GET", evidence["content_url"])
    await api.request("GET", f"/v1/tickets/{tid}/evidence/{evidence['id']}")
    await api.act(
        tid,
        "evidence",
        {
            "kind": "photo",
            "content_type": "text/html",
            "content_base64": base64.b64encode(EVIDENCE_MARKER).decode(),
        },
    )
    await api.request(
        "POST",
        "/v1/tickets",
        data=b"{not json " + EVIDENCE_MARKER,
        headers={"Content-Type": "application/json"},
    )
    await api.request("GET", f"/v1/tickets/{uuid.uuid4()}/timeline")
    for path in ("/metrics", "/readyz", "/openapi.json", "/v1/templates"):
        await api.request("GET", path)

    captured = capsys.readouterr()
    everything = "\n".join([b"".join(log_lines).decode(), caplog.text, captured.out, captured.err])
    assert len(log_lines) > 30
    leaked = [s[:12] + "…" for s in secrets if s in everything]
    assert not leaked, f"secrets in the logs: {leaked}"


@pytest.fixture
def stdlib_output() -> Iterator[io.StringIO]:
    """Every stdlib record (aiohttp.server, aiohttp.access, aiohttp.web, ours) as the
    services write it in production: through JsonFormatter on the root logger."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def send_raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One request written byte for byte; the raw answer (or b"" if the server hung up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


#: Ways an Authorization header (or another credential header) arrives malformed; `{k}`
#: is a valid key, the worst case to leak.
MALFORMED_CREDENTIALS = {
    "tab separator": "Authorization: Bearer\t{k}",
    "obs-fold continuation": "Authorization: Bearer\r\n {k}",
    "NUL before the token": "Authorization: Bearer \x00{k}",
    "NUL after the token": "Authorization: Bearer {k}\x00",
    "another scheme": "Authorization: Token {k}",
    "another scheme and a control byte": "Authorization: Token {k}\x01",
    "lowercase scheme": "Authorization: bearer {k}",
    "uppercase scheme": "Authorization: BEARER {k}\x00",
    "extra spaces": "Authorization:    Bearer    {k}   ",
    "Basic": "Authorization: Basic {k}\x00",
    "bare token": "Authorization: {k}",
    "bare token and NUL": "Authorization: {k}\x00",
    "mangled header name": "Authori\x00zation: {k}",
    "no colon": "Authorization {k}",
    "twice": "Authorization: Bearer {k}\r\nAuthorization: Bearer {k}",
    "Proxy-Authorization": "Proxy-Authorization: Bearer {k}\x00",
    "Cookie": "Cookie: session={k}\x00",
}


def _requests(path: str, credential: str) -> list[bytes]:
    body = b'{"arguments": {}}'
    return [
        f"GET {path} HTTP/1.1\r\nHost: x\r\n{credential}\r\nConnection: close\r\n\r\n".encode(),
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{credential}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + body,
    ]


async def test_a_malformed_credential_header_never_reaches_a_log_line_of_either_service(
    bridge: Bridge, log_lines: list[bytes], stdlib_output: io.StringIO
) -> None:
    api = bridge.api
    assert bridge.session._base_url is not None
    assert api.session._base_url is not None
    bridge_port, api_port = bridge.session._base_url.port, api.session._base_url.port
    assert bridge_port is not None
    assert api_port is not None
    targets = [
        (bridge_port, "/v1/tools", bridge.keys["supervisor"]),
        (bridge_port, "/mcp", bridge.keys["supervisor"]),
        (bridge_port, "/v1/tools/ticket.get/invoke", bridge.keys["supervisor"]),
        (api_port, "/v1/tickets", api.tokens["supervisor"]),
    ]
    statuses = set()
    for port, path, key in targets:
        for name, shape in MALFORMED_CREDENTIALS.items():
            for raw in _requests(path, shape.format(k=key)):
                answer = await send_raw(port, raw)
                statuses.add(answer[9:12])
                assert not answer.startswith(b"HTTP/1.1 5"), (name, path, answer[:200])

    written = stdlib_output.getvalue() + b"".join(log_lines).decode()
    secrets = [*bridge.keys.values(), *api.tokens.values()]
    assert "Error handling request" in written  # aiohttp's own lines were exercised
    assert b"400" in statuses
    assert b"401" in statuses
    assert [s[:12] for s in secrets if s in written] == []


async def test_a_one_megabyte_ticket_id_makes_a_bounded_log_line_in_both_services(
    bridge: Bridge, log_lines: list[bytes], stdlib_output: io.StringIO
) -> None:
    huge = "T" * 1_000_000
    rest = await bridge.invoke("ticket.get", {"ticket_id": huge})
    mcp = await bridge.request(
        "POST",
        "/mcp",
        data=orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "ticket.get", "arguments": {"ticket_id": huge}},
            }
        ),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert bridge.api.session._base_url is not None
    api_port = bridge.api.session._base_url.port
    assert api_port is not None
    for ticket_id in ("T" * 8000, huge):  # within and beyond aiohttp's request-line limit
        await send_raw(
            api_port,
            f"GET /v1/tickets/{ticket_id} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {bridge.api.tokens['supervisor']}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )

    assert rest.status in (413, 422)
    assert mcp.status in (200, 413)
    lines = [*log_lines, *stdlib_output.getvalue().encode().splitlines()]
    services = {orjson.loads(line)["service"] for line in log_lines}
    assert services == {"bridge", "dispatch-api"}
    assert max(len(line) for line in lines) < 8 * 1024
