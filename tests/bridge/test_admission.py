"""Admission control: beyond DISPATCH_MAX_IN_FLIGHT calls in flight the bridge refuses at
once, before any downstream work, and the calls it admitted are unaffected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from testkit.api import COMPLETE_TICKET

from .conftest import Bridge
from .test_mcp_protocol import post, request, rpc_result, tool_error
from .test_metrics import one, scrape


@pytest.fixture
def bridge_overrides() -> dict[str, Any]:
    return {"max_in_flight": 2}


async def test_a_call_beyond_the_limit_is_shed_at_once_and_admitted_ones_complete(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    ticket = created.body["result"]["ticket"]["id"]
    bridge.proxy.hold()
    admitted = [
        asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": ticket})) for _ in range(2)
    ]
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)
    for _ in range(500):  # the create, then both admitted calls reach the proxy
        if bridge.proxy.requests == 3:
            break
        await asyncio.sleep(0.01)

    shed = await asyncio.wait_for(bridge.invoke("ticket.get", {"ticket_id": ticket}), 2)
    over_mcp = await asyncio.wait_for(
        post(bridge, request("tools/call", {"name": "ticket.get", "arguments": {}})), 2
    )
    bridge.proxy.release()
    done = await asyncio.gather(*admitted)

    assert shed.status == 429
    assert shed.body["error"]["code"] == "rate_limited"
    assert shed.body["error"]["retryable"] is True
    assert shed.body["error"]["details"] == {
        "reason": "bridge_at_capacity",
        "max_in_flight": 2,
        "outcome": "none",
    }
    assert 50 <= shed.body["error"]["retry_after_ms"] <= 250
    assert shed.headers["Retry-After"] == "1"
    assert tool_error(rpc_result(over_mcp))["error"]["code"] == "rate_limited"  # before validation
    assert [r.body["ok"] for r in done] == [True, True]
    assert bridge.proxy.requests == 3  # nothing of the shed calls went downstream
    after = await bridge.invoke("ticket.get", {"ticket_id": ticket})
    assert after.body["ok"]
    scrape = (await bridge.request("GET", "/metrics", as_="")).raw.decode()
    assert 'tool_invocations_total{code="rate_limited",tool="ticket.get"} 2.0' in scrape


async def _limit_now(bridge: Bridge) -> float:
    return one((await scrape(bridge))[0], "tool_calls_in_flight_limit")


async def _in_windows(bridge: Bridge, ticket: str, windows: int) -> None:
    """Calls enough to close `windows` of the adaptive limit's (12 calls each, two at once,
    past its 50 ms)."""
    for _ in range(windows):
        for _ in range(6):
            calls = [bridge.invoke("ticket.get", {"ticket_id": ticket}) for _ in range(2)]
            assert all(r.status == 200 for r in await asyncio.gather(*calls))
        await asyncio.sleep(0.06)


@pytest.mark.parametrize("bridge_overrides", [{"min_in_flight": 2, "max_in_flight": 64}])
async def test_once_calls_queue_the_limit_falls_refuses_the_excess_at_once_then_recovers(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    ticket = created.body["result"]["ticket"]["id"]
    await _in_windows(bridge, ticket, 1)  # quick calls: the baseline
    assert await _limit_now(bridge) == 64

    bridge.proxy.delay_s = 0.05  # every answer late, as behind a queue
    shrinking = []
    for _ in range(20):  # each window shrinks it (by half at most): 64 .. 2 in six or more
        await _in_windows(bridge, ticket, 1)
        shrinking.append(await _limit_now(bridge))
        if shrinking[-1] == 2:
            break
    fallen = shrinking[-1]

    bridge.proxy.delay_s = 0.0
    bridge.proxy.hold()
    sent = bridge.proxy.requests
    admitted = [
        asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": ticket})) for _ in range(2)
    ]
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)
    shed = await asyncio.wait_for(bridge.invoke("ticket.get", {"ticket_id": ticket}), 2)
    over_mcp = await asyncio.wait_for(
        post(bridge, request("tools/call", {"name": "ticket.get", "arguments": {}})), 2
    )
    # Another key, with nothing in flight, is not refused for this key's calls.
    other = asyncio.create_task(
        bridge.invoke("ticket.get", {"ticket_id": ticket}, as_="dispatcher")
    )
    for _ in range(500):
        if bridge.proxy.requests == sent + 3:
            break
        await asyncio.sleep(0.01)
    reached = bridge.proxy.requests - sent
    bridge.proxy.release()
    done = await asyncio.gather(*admitted, other)
    await _in_windows(bridge, ticket, 4)  # quick again: the limit grows back
    recovered = await _limit_now(bridge)

    assert fallen == 2
    assert shrinking == sorted(shrinking, reverse=True)
    # By half a window at most, so not at once: 64 .. 2 takes five windows, and the calls
    # between two readings (12) close two at most.
    assert len(shrinking) >= 3
    assert shed.status == 429
    assert shed.body["error"]["code"] == "rate_limited"
    assert shed.body["error"]["details"] == {
        "reason": "bridge_at_capacity",
        "max_in_flight": 2,
        "outcome": "none",
    }
    assert tool_error(rpc_result(over_mcp))["error"]["code"] == "rate_limited"
    assert reached == 3  # the two admitted and the other key's: nothing of the refused ones
    assert [r.status for r in done] == [200, 200, 200]
    assert recovered > fallen
