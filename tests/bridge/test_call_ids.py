"""Call ids from any client: the agent names its call in the message (REST `tool_call_id`,
MCP `_meta["dispatch-bridge.dev/toolCallId"]`) or in an `Idempotency-Key` header, on either
transport; all name one call, so it has one effect. Two different ids for one call are
refused before anything is done. And a client that hangs up mid-call (a cancellation in MCP
2026-07-28) and re-issues it with a new JSON-RPC id gets the stored outcome of the write it
had already sent: dispatch-api finished it under the call's request_id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import asyncpg
import orjson
import pytest

from dispatch_api.settings import ApiSettings
from testkit.api import WINDOW, parsed_logs

from .conftest import Bridge

META_CALL_ID = "dispatch-bridge.dev/toolCallId"
META_REPLAYED = "dispatch-bridge.dev/replayed"
MODERN = "2026-07-28"
#: Bound on every wait here, so a broken test fails instead of hanging.
WAIT_S = 10.0


@pytest.fixture
def api_settings() -> ApiSettings:
    # The hang-up test holds a ticket's row lock while dispatch-api's write waits on it; the
    # write must wait (bounded) rather than give up (lock_timeout -> 409) meanwhile.
    return ApiSettings(
        db_pool_min=1,
        db_pool_max=8,
        db_lock_timeout_ms=20_000,
        db_statement_timeout_ms=20_000,
        metrics_refresh_s=0,
    )


def mcp_message(tool: str, arguments: dict[str, Any], ident: int, **meta: Any) -> dict[str, Any]:
    """A 2026-07-28 tools/call: version and capabilities ride in `_meta`."""
    full_meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        **meta,
    }
    params = {"name": tool, "arguments": arguments, "_meta": full_meta}
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}


def mcp_headers(tool: str, **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
        **extra,
    }


async def mcp_call(
    bridge: Bridge, tool: str, arguments: dict[str, Any], ident: int = 1, **headers: str
) -> dict[str, Any]:
    """One tools/call; `headers` may carry Idempotency_Key (spelt with an underscore)."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    body = mcp_message(tool, arguments, ident)
    if "Meta" in sent:
        body["params"]["_meta"][META_CALL_ID] = sent.pop("Meta")
    reply = await bridge.request(
        "POST", "/mcp", data=orjson.dumps(body), headers=mcp_headers(tool, **sent)
    )
    assert reply.status == 200, reply.raw
    assert reply.body["id"] == ident
    result: dict[str, Any] = reply.body["result"]
    return result


def bridge_lines(log_lines: list[bytes], endpoint: str) -> list[dict[str, Any]]:
    return [
        line
        for line in parsed_logs(log_lines)
        if line["service"] == "bridge"
        and line["event"] == "http_request"
        and line["endpoint"] == endpoint
    ]


def api_lines(log_lines: list[bytes], endpoint: str) -> list[dict[str, Any]]:
    return [
        line
        for line in parsed_logs(log_lines)
        if line["service"] == "dispatch-api"
        and line["event"] == "http_request"
        and line["endpoint"] == endpoint
    ]


async def stored_events(bridge: Bridge, ticket_id: str) -> list[tuple[str, str | None]]:
    """(type, request_id) of the ticket's timeline, as stored."""
    conn = await asyncpg.connect(bridge.api.database_url)
    try:
        found = await conn.fetch(
            "SELECT type, request_id FROM timeline_events WHERE ticket_id = $1 ORDER BY seq",
            ticket_id,
        )
    finally:
        await conn.close()
    return [(r["type"], r["request_id"]) for r in found]


# --- the call's id, from wherever the client can put it --------------------------------------


async def test_one_idempotency_key_names_one_call_over_rest_and_mcp_alone_or_with_the_body_id(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    ticket = await bridge.api.create_ticket()
    args = {"ticket_id": ticket["id"], **WINDOW}
    key = {"Idempotency-Key": "7f1d2b0a-4c1e-4f8e-9a39-6a3c0f1e2d4b"}

    first = await bridge.invoke("ticket.schedule", args, headers=key)
    over_mcp = await mcp_call(
        bridge, "ticket_schedule", args, Idempotency_Key=key["Idempotency-Key"]
    )
    both = await bridge.invoke(  # the body's id and the header (quoted, as the draft spells it)
        "ticket.schedule",
        args,
        tool_call_id=key["Idempotency-Key"],
        headers={"Idempotency-Key": f'"{key["Idempotency-Key"]}"'},
    )
    by_meta = await mcp_call(bridge, "ticket_schedule", args, Meta=key["Idempotency-Key"])

    assert first.status == both.status == 200, (first.body, both.body)
    request_id = first.body["request_id"]
    assert first.body["replayed"] is False
    assert both.body["request_id"] == request_id
    assert both.body["replayed"] is True
    for result in (over_mcp, by_meta):
        assert result["isError"] is False, result
        assert result["_meta"] == {META_REPLAYED: True}
        assert result["structuredContent"] == first.body["result"]
    assert [line["request_id"] for line in bridge_lines(log_lines, "/mcp")] == [request_id] * 2
    assert await stored_events(bridge, ticket["id"]) == [
        ("created", ANY),
        ("scheduled", request_id),
    ]


async def test_two_different_call_ids_for_one_call_are_refused_and_nothing_is_done(
    bridge: Bridge,
) -> None:
    ticket = await bridge.api.create_ticket()
    args = {"ticket_id": ticket["id"], **WINDOW}
    forwarded = bridge.proxy.requests

    rest = await bridge.invoke(
        "ticket.schedule", args, tool_call_id="call-a", headers={"Idempotency-Key": "call-b"}
    )
    over_mcp = await mcp_call(bridge, "ticket_schedule", args, Meta="call-a", Idempotency_Key="b")

    assert rest.status == 400
    assert rest.body["ok"] is False
    assert rest.body["request_id"] is None
    error = rest.body["error"]
    assert error["code"] == "invalid_arguments"
    assert "name two different calls" in error["message"]
    assert error["details"]["header"] == "Idempotency-Key"
    assert error["details"]["errors"] == [
        {"path": "tool_call_id", "expected": "the Idempotency-Key value"}
    ]
    assert over_mcp["isError"] is True
    envelope = orjson.loads(over_mcp["content"][0]["text"])
    assert envelope["error"]["code"] == "invalid_arguments"
    assert "name two different calls" in envelope["error"]["message"]
    assert bridge.proxy.requests == forwarded  # nothing reached dispatch-api
    assert await stored_events(bridge, ticket["id"]) == [("created", ANY)]


@pytest.mark.parametrize(
    "hostile",
    ["k" * 4000, "two words", "semi;colon", "caf\u00e9-\u2603", '""', '"unterminated'],
    ids=["4000 chars", "space", "semicolon", "non-ascii", "empty quoted", "half quoted"],
)
async def test_an_unsafe_idempotency_key_is_refused_with_a_small_answer_that_does_not_echo_it(
    bridge: Bridge, log_lines: list[bytes], hostile: str
) -> None:
    ticket = await bridge.api.create_ticket()
    args = {"ticket_id": ticket["id"], **WINDOW}
    raw_header = hostile.encode().decode("latin-1")  # as it travels on the wire
    forwarded = bridge.proxy.requests

    rest = await bridge.invoke("ticket.schedule", args, headers={"Idempotency-Key": raw_header})
    over_mcp = await mcp_call(bridge, "ticket_schedule", args, Idempotency_Key=raw_header)

    assert rest.status == 400
    assert rest.body["error"]["code"] == "invalid_arguments"
    assert rest.body["error"]["details"] == {"header": "Idempotency-Key", "outcome": "none"}
    assert over_mcp["isError"] is True
    assert orjson.loads(over_mcp["content"][0]["text"])["error"]["code"] == "invalid_arguments"
    for answer in (rest.raw, json.dumps(over_mcp).encode()):
        assert len(answer) < 2048
        if len(hostile) > 8:
            assert hostile[:40].encode() not in answer
    assert all(len(line) < 4096 for line in log_lines)
    assert bridge.proxy.requests == forwarded
    assert await stored_events(bridge, ticket["id"]) == [("created", ANY)]


# --- a hang-up is a cancellation; the re-issued call gets the replay -------------------------


@pytest.fixture
async def ticket_row_locked(bridge: Bridge) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A READY_TO_SCHEDULE ticket whose row this test holds locked, and the locking
    connection (roll it back to let dispatch-api's write through)."""
    ticket = await bridge.api.create_ticket()
    conn = await asyncpg.connect(bridge.api.database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("SELECT id FROM tickets WHERE id = $1 FOR UPDATE", ticket["id"])
    try:
        yield ticket["id"], conn
    finally:
        if not conn.is_closed():
            await conn.close()


async def writes_waiting_on_a_lock(conn: asyncpg.Connection) -> int:
    found: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return found


async def test_a_call_whose_client_hung_up_mid_write_is_finished_and_replayed_when_reissued(
    bridge: Bridge,
    log_lines: list[bytes],
    ticket_row_locked: tuple[str, asyncpg.Connection],
) -> None:
    ticket_id, locker = ticket_row_locked
    args = {"ticket_id": ticket_id, **WINDOW}
    body = orjson.dumps(mcp_message("ticket_schedule", args, 1, **{META_CALL_ID: "call-hangup"}))
    headers = {**mcp_headers("ticket_schedule"), "Content-Length": str(len(body))}
    headers["Authorization"] = f"Bearer {bridge.keys['supervisor']}"
    url = bridge.session._base_url
    assert url is not None
    assert url.host is not None
    assert url.port is not None
    request = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode() + body

    async with asyncio.timeout(WAIT_S):
        _, agent = await asyncio.open_connection(url.host, url.port)
        agent.write(request)
        await agent.drain()
        # dispatch-api has the write and waits on the ticket's row: the call is mid-write.
        while await writes_waiting_on_a_lock(locker) == 0:  # noqa: ASYNC110 (PostgreSQL's)
            await asyncio.sleep(0.01)
        agent.close()  # the client hangs up: MCP 2026-07-28 reads it as a cancellation
        await agent.wait_closed()
        while not bridge_lines(log_lines, "/mcp"):  # noqa: ASYNC110 (a log sink, no event)
            await asyncio.sleep(0.01)
        still_waiting = await writes_waiting_on_a_lock(locker)
        await locker.execute("ROLLBACK")  # let the write through (the lock changed nothing)
        while not api_lines(log_lines, "/v1/tickets/{ticket_id}/schedule"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    [cancelled] = bridge_lines(log_lines, "/mcp")
    assert cancelled["status_code"] == 499  # the bridge saw the client go
    assert still_waiting == 1  # ...and did not take the write downstream back with it
    [write] = api_lines(log_lines, "/v1/tickets/{ticket_id}/schedule")
    assert write["status_code"] == 200  # dispatch-api finished it, nobody waiting
    assert await stored_events(bridge, ticket_id) == [("created", ANY), ("scheduled", ANY)]

    # The client re-issues the broken request: a new JSON-RPC id, the same call id.
    again = await mcp_call(bridge, "ticket_schedule", args, ident=2, Meta="call-hangup")

    assert again["isError"] is False, again
    assert again["_meta"] == {META_REPLAYED: True}
    assert again["structuredContent"]["ticket"]["state"] == "SCHEDULED"
    [_, reissued] = bridge_lines(log_lines, "/mcp")
    request_id = reissued["request_id"]
    assert again["structuredContent"]["event"]["request_id"] == request_id
    assert await stored_events(bridge, ticket_id) == [("created", ANY), ("scheduled", request_id)]
