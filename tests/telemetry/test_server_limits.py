"""Both services as real processes against hostile connections on loopback: idle
keep-alive sockets, request heads and bodies trickled in, more connections than the cap,
a descriptor limit smaller than the crowd. Raw sockets, so nothing is smoothed over by a
client library; timeouts are configured short so that each wait is brief and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatch_api.domain import Role
from dispatch_api.store import connect
from telemetry import quiet_accept_errors
from testkit.processes import ApiProcess, BridgeProcess, new_token

SHORT = {
    "DISPATCH_IDLE_TIMEOUT_S": "0.5",
    "DISPATCH_HEADER_TIMEOUT_S": "0.5",
    "DISPATCH_BODY_TIMEOUT_S": "0.5",
}
#: Every wait for the server to act is bounded by this (the timeouts above are far shorter).
BOUND_S = 10.0
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"


class Conn:
    """One raw TCP connection to a service."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-cased names), body (by Content-Length)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), BOUND_S)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), BOUND_S)
        return status, headers, body

    async def rest(self) -> bytes:
        """Everything until the server closes the connection (bounded wait)."""
        try:
            return await asyncio.wait_for(self.reader.read(), BOUND_S)
        except ConnectionResetError:
            return b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Opener = Callable[[int], Awaitable[Conn]]


@pytest.fixture
async def dial() -> AsyncIterator[Opener]:
    """Opens raw connections to a port; closes every one of them after the test."""
    opened: list[Conn] = []

    async def open_to(port: int) -> Conn:
        conn = await Conn.open(port)
        opened.append(conn)
        return conn

    yield open_to
    for conn in opened:
        await conn.close()


async def _tickets(database_url: str) -> int:
    conn = await connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM tickets")
        return count
    finally:
        await conn.close()


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[ApiProcess]:
    async with ApiProcess(database_url, tmp_path, env=SHORT) as process:
        yield process


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    api: ApiProcess,
    dial: Opener,
) -> None:
    conn = await dial(api.port)
    await conn.send(HEALTHZ)
    status, headers, _ = await conn.response()

    assert status == 200
    assert headers.get("connection") != "close"  # kept alive
    assert await conn.rest() == b""  # then closed by the server, unasked


async def test_a_request_head_trickled_in_is_answered_408_and_closed_after_the_header_timeout(
    api: ApiProcess,
    dial: Opener,
) -> None:
    conn = await dial(api.port)
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    rest = await conn.rest()  # never finished: the server ends it

    assert rest.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"code":"request_timeout"' in rest
    assert b"Connection: close" in rest


async def test_a_connection_that_never_sends_is_closed_without_an_answer(
    api: ApiProcess,
    dial: Opener,
) -> None:
    conn = await dial(api.port)

    assert await conn.rest() == b""


async def test_a_trickled_body_is_answered_408_and_nothing_is_written(
    api: ApiProcess,
    database_url: str,
    dial: Opener,
) -> None:
    token = await new_token(database_url, "disp-9", Role.DISPATCHER)
    conn = await dial(api.port)
    await conn.send(
        b"POST /v1/tickets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: trickle-1\r\nContent-Length: 4000\r\n"
        + f"Authorization: Bearer {token}\r\n\r\n".encode()
        + b'{"title": "slow'
    )
    status, headers, body = await conn.response()
    problem = orjson.loads(body)

    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert problem["code"] == "request_timeout"
    assert await _tickets(database_url) == 0


async def test_the_bridge_answers_a_trickled_tool_call_408_without_calling_dispatch_api(
    database_url: str,
    tmp_path: Path,
    dial: Opener,
) -> None:
    gateway = await new_token(database_url, "bridge", Role.GATEWAY, gateway=True)
    api = ApiProcess(database_url, tmp_path)
    bridge = BridgeProcess(api.url, gateway, tmp_path, env=SHORT)
    async with api, bridge:
        conn = await dial(bridge.port)
        await conn.send(
            b"POST /v1/tools/ticket.create/invoke HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4000\r\n"
            + f"Authorization: Bearer {bridge.keys['agent-sup']}\r\n\r\n".encode()
            + b'{"arguments": {"title": "slow'
        )
        status, _, body = await conn.response()
        await conn.close()  # else shutting down waits for its body
        idle = await dial(bridge.port)
        idle_rest = await idle.rest()

    assert status == 408
    assert orjson.loads(body)["status"] == 408
    assert idle_rest == b""  # the bridge closes a silent connection too
    assert await _tickets(database_url) == 0


async def test_connections_beyond_the_cap_are_refused_503_while_an_open_client_keeps_working(
    database_url: str,
    tmp_path: Path,
    dial: Opener,
) -> None:
    env = {"DISPATCH_MAX_CONNECTIONS": "3", "DISPATCH_HEADER_TIMEOUT_S": "30"}
    async with ApiProcess(database_url, tmp_path, env=env) as api:
        client = await dial(api.port)
        await client.send(HEALTHZ)
        assert (await client.response())[0] == 200
        holders = [await dial(api.port) for _ in range(2)]
        for holder in holders:  # the server has taken them in: each answers a request
            await holder.send(HEALTHZ)
            assert (await holder.response())[0] == 200
        refused = [await dial(api.port) for _ in range(5)]
        answers = [await conn.rest() for conn in refused]
        await client.send(HEALTHZ)
        still = await client.response()
        for holder in holders:
            await holder.close()
        again = await dial(api.port)  # a slot freed: a new client is served
        await again.send(HEALTHZ)
        served_again = await again.response()

    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1" in head
        assert orjson.loads(body)["code"] == "too_many_connections"
    assert still[0] == 200
    assert served_again[0] == 200


async def test_a_crowd_beyond_the_descriptor_limit_is_refused_and_logged_briefly_then_served(
    database_url: str,
    tmp_path: Path,
    dial: Opener,
) -> None:
    api = ApiProcess(database_url, tmp_path, env={"DISPATCH_HEADER_TIMEOUT_S": "1"})
    api.nofile = 128
    async with api:
        crowd = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", api.port) for _ in range(250))
        )
        statuses: list[int] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline and 200 not in statuses:
            try:
                conn = await dial(api.port)
                await conn.send(HEALTHZ)
                statuses.append((await conn.response())[0])
            except (ConnectionError, asyncio.IncompleteReadError):
                statuses.append(0)  # reset: counted, and must stay rare
        crowd_answers = await asyncio.gather(*(Conn(r, w).rest() for r, w in crowd))
        for reader, writer in crowd:
            await Conn(reader, writer).close()
        log_bytes = api.log_path.stat().st_size
        errors = api.logged("log", level="error")

    assert statuses[-1] == 200  # served while the crowd is still there
    assert set(statuses) <= {200, 503}  # or refused with an answer, never hung
    refused = [a for a in crowd_answers if a.startswith(b"HTTP/1.1 503 ")]
    assert refused  # beyond the cap: a 503 each, not a silent hang
    assert all(a == b"" for a in crowd_answers if a not in refused)  # idle: closed
    assert log_bytes < 20_000  # not a traceback per refused accept()
    assert len(errors) <= 5


async def test_a_connection_cap_below_one_stops_the_service_naming_its_variable(
    database_url: str, tmp_path: Path
) -> None:
    api = ApiProcess(database_url, tmp_path, env={"DISPATCH_MAX_CONNECTIONS": "0"})
    with pytest.raises(RuntimeError, match="exited early"):
        await api.start(timeout_s=BOUND_S)

    assert "DISPATCH_MAX_CONNECTIONS: must be at least 1" in api.log_tail()


async def test_accept_failures_for_want_of_descriptors_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    passed_on: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: passed_on.append(context))
    try:
        quiet_accept_errors(loop, interval_s=3600)
        emfile = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.INFO, logger="telemetry.server"):
            for _ in range(1000):  # what CPython 3.11 reports per pending connection
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": emfile}
                )
            loop.call_exception_handler({"message": "something else", "exception": ValueError()})
    finally:
        loop.set_exception_handler(previous)

    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is None  # one line, no traceback
    assert [c["message"] for c in passed_on] == ["something else"]


def _create_heads(
    api: ApiProcess, dispatcher: str, bridge: BridgeProcess, key: str
) -> dict[int, bytes]:
    """Port -> the start of a head creating a ticket there (its request line and
    credentials; the test adds the rest): dispatch-api's route and the bridge's tool."""
    return {
        api.port: b"POST /v1/tickets HTTP/1.1\r\n"
        + f"Idempotency-Key: {key}\r\nAuthorization: Bearer {dispatcher}\r\n".encode(),
        bridge.port: b"POST /v1/tools/ticket.create/invoke HTTP/1.1\r\n"
        + f"Authorization: Bearer {bridge.keys['agent-sup']}\r\n".encode(),
    }


async def test_a_chunked_body_broken_after_its_head_is_answered_400_at_once_on_both_services(
    database_url: str,
    tmp_path: Path,
    dial: Opener,
) -> None:
    # Long timeouts: only the framing check may end these requests within the bounded wait.
    patient = {"DISPATCH_BODY_TIMEOUT_S": "60", "DISPATCH_HEADER_TIMEOUT_S": "60"}
    gateway = await new_token(database_url, "bridge", Role.GATEWAY, gateway=True)
    dispatcher = await new_token(database_url, "disp-7", Role.DISPATCHER)
    api = ApiProcess(database_url, tmp_path, env=patient)
    async with api, BridgeProcess(api.url, gateway, tmp_path, env=patient) as bridge:
        targets = _create_heads(api, dispatcher, bridge, "chunk-1")
        for port, head in targets.items():
            conn = await dial(port)
            await conn.send(
                head + b"Host: test\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), BOUND_S)
            assert interim.startswith(b"HTTP/1.1 100")  # the handler is reading the body now
            await conn.send(b'5\r\n{"arg\r\n')
            await conn.send(b"zz\r\numents\r\n0\r\n\r\n")  # a chunk size that is not hex
            rest = await conn.rest()

            assert rest.startswith(b"HTTP/1.1 400 Bad Request\r\n"), rest[:200]
            assert b'"code":"malformed_body"' in rest
        lines = api.log_lines() + bridge.log_lines()
    assert await _tickets(database_url) == 0
    assert [line for line in lines if line.get("level") == "error"] == []
    assert [line for line in lines if (line.get("status_code") or 0) >= 500] == []


async def test_a_body_refused_for_its_size_is_dropped_unread_and_ends_the_connection(
    database_url: str,
    tmp_path: Path,
    dial: Opener,
) -> None:
    """A refusal answered while its body is still arriving says `Connection: close`; the rest
    of the body is dropped unparsed (`telemetry.drop_unread_body`), a request sent after it
    is not served (RFC 9112 9.6), and the connection ends once the client is done. On both
    services; the client sends all of the body, as a client that reads only then does."""
    gateway = await new_token(database_url, "bridge", Role.GATEWAY, gateway=True)
    dispatcher = await new_token(database_url, "disp-8", Role.DISPATCHER)
    size = 8 * 1024 * 1024  # over both services' bound for a ticket.create body
    api = ApiProcess(database_url, tmp_path)
    async with api, BridgeProcess(api.url, gateway, tmp_path) as bridge:
        targets = _create_heads(api, dispatcher, bridge, "big-1")
        for port, head in targets.items():
            conn = await dial(port)
            await conn.send(
                head
                + b"Host: test\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {size}\r\n\r\n".encode()
                + b"x" * 1024
            )
            status, headers, answer = await conn.response()
            await conn.send(b"x" * (size - 1024) + HEALTHZ)
            conn.writer.write_eof()
            rest = await conn.rest()

            assert status == 413, answer
            assert b"exceeds" in answer  # the problem or the bridge's envelope says why
            assert headers["connection"] == "close"
            assert rest == b""  # the GET after the body was never answered
    assert await _tickets(database_url) == 0


async def test_a_tool_call_that_asks_100_continue_is_told_continue_only_once_admitted(
    database_url: str,
    tmp_path: Path,
    dial: Opener,
) -> None:
    """`Expect: 100-continue` on the bridge's REST invoke: an admitted call gets "100
    Continue", then its answer; a call refused for its declared size gets the refusal
    instead, so its body is never sent (bridge._rest.expect_continue_later)."""
    gateway = await new_token(database_url, "bridge", Role.GATEWAY, gateway=True)
    api = ApiProcess(database_url, tmp_path)
    async with api, BridgeProcess(api.url, gateway, tmp_path) as bridge:

        def head(length: int) -> bytes:
            return (
                b"POST /v1/tools/ticket.create/invoke HTTP/1.1\r\nHost: test\r\n"
                + f"Authorization: Bearer {bridge.keys['agent-sup']}\r\n".encode()
                + b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                + f"Content-Length: {length}\r\n\r\n".encode()
            )

        body = orjson.dumps({"arguments": {"customer_name": "Expect Co", "priority": "P3"}})
        admitted = await dial(bridge.port)
        await admitted.send(head(len(body)))
        interim = await asyncio.wait_for(admitted.reader.readuntil(b"\r\n\r\n"), BOUND_S)
        await admitted.send(body)
        status, _, answer = await admitted.response()

        refused = await dial(bridge.port)
        await refused.send(head(8 * 1024 * 1024))  # and not one byte of its body
        refused_status, refused_headers, refusal = await refused.response()

    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert status == 200, answer
    assert orjson.loads(answer)["ok"] is True
    assert refused_status == 413, refusal
    assert b"exceeds" in refusal
    assert refused_headers["connection"] == "close"
    assert await _tickets(database_url) == 1
