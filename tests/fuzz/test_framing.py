"""Broken bodies and framing against both services: dispatch-api's body routes, the bridge's
REST invoke and its MCP endpoint.

Compressed bodies (valid, corrupt, truncated, with trailing garbage), unknown content
codings, empty bodies, chunked encodings that break after the headers, and clients that hang
up mid-body each get a precise 4xx, or a clean close, promptly; nothing is applied, nothing is
logged or counted as a server error (the SLO alerts read the 5xx series).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable

import orjson
import pytest
from multidict import CIMultiDict

from testkit.api import COMPLETE_TICKET, Reply, parsed_logs

from .conftest import Bridge
from .test_corpus import (
    JSON,
    Check,
    Probe,
    Targets,
    assert_harmless,
    database_state,
    envelope,
    metric_series,
    problem,
    rest_call,
    rpc_call,
    rpc_error,
    server_errors,
)

#: How long a broken request may take to be answered or closed: "promptly", not a timeout.
PROMPTLY_S = 5.0


def _port(t: Targets, service: str) -> int:
    session = t.api.session if service == "api" else t.bridge.session
    assert session._base_url is not None
    assert session._base_url.port is not None
    return session._base_url.port


def _head(t: Targets, service: str) -> bytes:
    """Request line and headers (no blank line) of a body route of `service`, as a
    supervisor: dispatch-api's create, the bridge's ticket.create invoke, or /mcp."""
    if service == "api":
        auth = t.api_auth["Authorization"]
        return (
            f"POST /v1/tickets HTTP/1.1\r\nHost: api\r\nAuthorization: {auth}\r\n"
            f"Idempotency-Key: {uuid.uuid4()}\r\n"
        ).encode()
    auth = t.bridge_auth["Authorization"]
    path = "/v1/tools/ticket.create/invoke" if service == "rest" else "/mcp"
    accept = "Accept: application/json, text/event-stream\r\n" if service == "mcp" else ""
    return f"POST {path} HTTP/1.1\r\nHost: bridge\r\nAuthorization: {auth}\r\n{accept}".encode()


async def exchange(port: int, data: bytes, *, then: bytes = b"") -> Reply:
    """Send `data`, and `then` once the server asks for the body (`data` ends in headers
    with `Expect: 100-continue`: the handler runs and reads). Read the answer until the
    server closes: a closed connection with no answer is a Reply of status 0."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if then:
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PROMPTLY_S)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            writer.write(then)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), PROMPTLY_S)
    finally:
        writer.close()
    if not raw:
        return Reply(0, CIMultiDict(), None, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    parsed = orjson.loads(body) if "json" in headers.get("Content-Type", "") and body else None
    return Reply(int(status_line.split()[1]), headers, parsed, body)


def sent(
    t: Targets, service: str, body: bytes, headers: str = "", ctype: str | None = JSON
) -> Callable[[], Awaitable[Reply]]:
    """A body route of `service` sent `body` with a Content-Length and extra `headers`."""

    async def send() -> Reply:
        extra = headers + (f"Content-Type: {ctype}\r\n" if ctype else "")
        length = f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        data = _head(t, service) + extra.encode() + length.encode() + body
        return await exchange(_port(t, service), data)

    return send


def _valid(service: str) -> bytes:
    return {
        "api": orjson.dumps(COMPLETE_TICKET),
        "rest": rest_call(COMPLETE_TICKET),
        "mcp": rpc_call("ticket.create", COMPLETE_TICKET),
    }[service]


def refused_coding(service: str) -> Check:
    """415 for a content coding other than identity, saying which coding is accepted."""
    check = {
        "api": problem(415, "unsupported_content_encoding", accepted_encodings=["identity"]),
        "rest": envelope(415, "invalid_arguments"),
        "mcp": rpc_error(415, -32600),
    }[service]

    def checked(reply: Reply) -> None:
        check(reply)
        if service == "api":
            assert reply.headers["Accept-Encoding"] == "identity"

    return checked


def not_json(service: str) -> Check:
    return {
        "api": problem(400, "invalid_json"),
        "rest": envelope(400, "invalid_arguments"),
        "mcp": rpc_error(400, -32700),
    }[service]


SERVICES = ("api", "rest", "mcp")


def coding_probes(t: Targets) -> list[Probe]:
    probes = []
    for service in SERVICES:
        valid = _valid(service)
        packed = gzip.compress(valid)
        codings = {
            "valid gzip": (packed, "gzip"),
            "corrupt gzip": (b"\x1f\x8b\x08\x00garbage, not deflate data", "gzip"),
            # Read through aiohttp's decoder, this was an empty body: the call ran without it.
            "gzip cut in its header": (packed[:5], "gzip"),
            "gzip cut before its trailer": (packed[:-8], "gzip"),
            "gzip with trailing garbage": (packed + b"TRAILING", "gzip"),
            "corrupt deflate": (b"xx not a zlib stream", "deflate"),
            "valid deflate": (zlib.compress(valid), "deflate"),
            "unknown coding": (valid, "x-unheard-of"),
            "two codings": (gzip.compress(packed), "gzip, gzip"),
        }
        for label, (body, coding) in codings.items():
            send = sent(t, service, body, f"Content-Encoding: {coding}\r\n")
            probes.append(Probe(f"{service} {label}", send, refused_coding(service)))
    return probes


async def test_compressed_and_unknown_content_codings_are_415_and_change_nothing(
    bridge: Bridge, log_lines: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    t = Targets(bridge)

    await assert_harmless(bridge, log_lines, coding_probes(t))

    assert bridge.proxy.requests == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_identity_coding_is_accepted_as_no_coding(bridge: Bridge) -> None:
    t = Targets(bridge)
    for service in SERVICES:
        reply = await sent(t, service, _valid(service), "Content-Encoding: identity\r\n")()
        assert reply.status in (200, 201), (service, reply.status, reply.raw[:300])


def empty_probes(t: Targets) -> list[Probe]:
    probes = []
    for service in SERVICES:
        for label, body, ctype in (
            ("empty body declared JSON", b"", JSON),
            ("blank body declared JSON", b" \r\n\t", JSON),
            ("empty body declared JSON with a charset", b"", "application/json; charset=utf-8"),
        ):
            probes.append(
                Probe(f"{service} {label}", sent(t, service, body, "", ctype), not_json(service))
            )
    return probes


async def test_an_empty_body_is_400_not_an_empty_object(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    t = Targets(bridge)

    await assert_harmless(bridge, log_lines, empty_probes(t))

    assert bridge.proxy.requests == 0


def _hung_up(log_lines: list[bytes]) -> bool:
    return any(line.get("status_code") == 499 for line in parsed_logs(log_lines))


@pytest.mark.parametrize("service", SERVICES)
async def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(
    bridge: Bridge, log_lines: list[bytes], service: str
) -> None:
    t = Targets(bridge)
    before = await database_state(bridge)
    series = await metric_series(bridge)
    body = _valid(service)
    head = _head(t, service) + b"Content-Type: application/json\r\n"
    head += f"Content-Length: {len(body) + 100}\r\n\r\n".encode()

    _, writer = await asyncio.open_connection("127.0.0.1", _port(t, service))
    writer.write(head + body)  # 100 bytes short of what it announced
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    async with asyncio.timeout(PROMPTLY_S):  # the server notices, and logs the request
        # What we wait for lands in a log sink (a list): there is no event to await.
        while not _hung_up(log_lines):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await database_state(bridge) == before
    assert server_errors(log_lines) == []
    fives = {s for s in (await metric_series(bridge))["api"] if 'code="5' in s}
    assert fives == {s for s in series["api"] if 'code="5' in s}
    assert bridge.proxy.requests == 0
