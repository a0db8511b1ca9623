"""Admission control: beyond DISPATCH_MAX_IN_FLIGHT calls in flight the bridge refuses at
once, before any downstream work, and the calls it admitted are unaffected."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from testkit.api import COMPLETE_TICKET

from .conftest import Bridge
from .test_mcp_protocol import post, request, rpc_result, tool_error


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
