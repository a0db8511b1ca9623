"""Overload admission: while the bridge's event loop lags (a standing queue, not one late
tick), new calls are refused at once, before their body is read, with nothing done; at
normal load, and after a single stall, nothing is refused."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge._keys import OVERLOAD
from testkit.api import COMPLETE_TICKET

from .conftest import Bridge
from .test_mcp_protocol import post, request, rpc_result, tool_error


@pytest.fixture
def bridge_overrides() -> dict[str, Any]:
    return {"max_loop_lag_ms": 5}


@asynccontextmanager
async def lagging_loop(bridge: Bridge) -> AsyncIterator[None]:
    """Keep the event loop busy (as a saturated CPU would: every callback runs 20 ms late)
    until the bridge reports a standing lag; stop on the way out and wait until it clears."""
    loop = asyncio.get_running_loop()
    busy = [True]

    def hog() -> None:
        hold_the_loop(0.02)  # CPU work, as a saturated bridge's
        if busy[0]:
            loop.call_soon(hog)

    loop.call_soon(hog)
    try:
        await _until(lambda: bridge.app[OVERLOAD].lag_ms > 5)
        yield
    finally:
        busy[0] = False
        await _until(lambda: bridge.app[OVERLOAD].lag_ms < 5)


def hold_the_loop(seconds: float) -> None:
    """Block the event loop, as CPU-bound work does (deliberately: this is the load)."""
    time.sleep(seconds)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):  # bounded: five seconds
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_call_while_the_loop_lags_is_refused_at_once_with_nothing_done(
    bridge: Bridge,
) -> None:
    tickets = await bridge.api.count("SELECT count(*) FROM tickets")
    downstream = bridge.proxy.requests

    async with lagging_loop(bridge):
        shed = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call-1")
        over_mcp = await post(
            bridge, request("tools/call", {"name": "ticket.create", "arguments": COMPLETE_TICKET})
        )

    assert shed.status == 429
    error = shed.body["error"]
    assert error["code"] == "rate_limited"
    assert error["retryable"] is True
    assert error["details"]["reason"] == "bridge_overloaded"
    assert error["details"]["outcome"] == "none"
    assert error["details"]["loop_lag_ms"] > 5
    assert 50 <= error["retry_after_ms"] <= 250
    assert shed.headers["Retry-After"] == "1"
    mcp_error = tool_error(rpc_result(over_mcp))["error"]
    assert (mcp_error["code"], mcp_error["details"]["reason"]) == (
        "rate_limited",
        "bridge_overloaded",
    )
    assert bridge.proxy.requests == downstream  # nothing went to dispatch-api
    assert await bridge.api.count("SELECT count(*) FROM tickets") == tickets
    scrape = (await bridge.request("GET", "/metrics", as_="")).raw.decode()
    assert 'tool_invocations_total{code="rate_limited",tool="ticket.create"} 2.0' in scrape


async def test_a_call_refused_for_overload_is_applied_once_when_retried_after_the_lag(
    bridge: Bridge,
) -> None:
    async with lagging_loop(bridge):
        shed = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call-2")

    retried = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="call-2")

    assert shed.status == 429
    assert retried.status == 200
    assert retried.body["ok"] is True
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 1


async def test_a_burst_at_normal_load_is_never_refused(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    ticket = created.body["result"]["ticket"]["id"]

    # Two agents, each at its own in-flight cap (16): all the concurrency a key is allowed.
    replies = await asyncio.gather(
        *(
            bridge.invoke("ticket.get", {"ticket_id": ticket}, as_=agent)
            for agent in ("supervisor", "dispatcher")
            for _ in range(16)
        )
    )

    assert [r.status for r in replies] == [200] * 32


async def test_a_single_stall_of_the_loop_refuses_nothing(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    ticket = created.body["result"]["ticket"]["id"]
    hold_the_loop(0.2)  # one long pause (a GC, the OS running another process): not overload

    after = await bridge.invoke("ticket.get", {"ticket_id": ticket})

    assert after.status == 200
    assert bridge.app[OVERLOAD].lag_ms < 5


async def test_the_metrics_show_the_loop_lag(bridge: Bridge) -> None:
    async with lagging_loop(bridge):
        lagging = (await bridge.request("GET", "/metrics", as_="")).raw.decode()
    calm = (await bridge.request("GET", "/metrics", as_="")).raw.decode()

    assert _gauge(lagging, "event_loop_lag_seconds") > 0.005
    assert _gauge(calm, "event_loop_lag_seconds") < 0.005


def _gauge(scrape: str, name: str) -> float:
    (line,) = [line for line in scrape.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_while_one_key_holds_most_of_the_work_only_its_calls_are_refused_for_overload(
    bridge: Bridge,
) -> None:
    """The noisy neighbour: one key's large upload is in flight (its answer held back) while
    the loop lags; another key's call goes on, the uploader's next one is refused."""
    tid = (await bridge.invoke("ticket.create", COMPLETE_TICKET)).body["result"]["ticket"]["id"]
    bridge.proxy.hold_large(512 * 1024)
    upload = asyncio.create_task(
        bridge.invoke("evidence.attach", _upload(tid), as_="dispatcher", tool_call_id="up-1")
    )
    try:
        await _until(lambda: bridge.proxy.large_held == 1)
        async with lagging_loop(bridge):
            other = await bridge.invoke("ticket.get", {"ticket_id": tid}, as_="supervisor")
            uploader = await bridge.invoke("ticket.get", {"ticket_id": tid}, as_="dispatcher")
    finally:
        bridge.proxy.release_large()
        uploaded = await upload

    assert other.status == 200, other.body
    assert uploader.status == 429
    assert uploader.body["error"]["details"]["reason"] == "bridge_overloaded"
    assert uploaded.status == 200, uploaded.body


async def test_while_no_key_holds_most_of_the_work_every_key_is_refused_for_overload(
    bridge: Bridge,
) -> None:
    tid = (await bridge.invoke("ticket.create", COMPLETE_TICKET)).body["result"]["ticket"]["id"]
    sent = bridge.proxy.requests
    bridge.proxy.hold()
    held = [
        asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}, as_=agent))
        for agent in ("supervisor", "dispatcher")
    ]
    try:
        await _until(lambda: bridge.proxy.requests == sent + 2)  # both held downstream
        async with lagging_loop(bridge):
            replies = [
                await bridge.invoke("ticket.get", {"ticket_id": tid}, as_=agent)
                for agent in ("supervisor", "dispatcher")
            ]
    finally:
        bridge.proxy.release()
        await asyncio.gather(*held)

    assert [r.status for r in replies] == [429, 429]
    assert {r.body["error"]["details"]["reason"] for r in replies} == {"bridge_overloaded"}


def _upload(tid: str) -> dict[str, Any]:
    """Evidence of ~600 kB inline (a body of ~820 kB): a heavy call."""
    return {
        "ticket_id": tid,
        "kind": "document",
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(b"%PDF" * (150 * 1024)).decode(),
    }
