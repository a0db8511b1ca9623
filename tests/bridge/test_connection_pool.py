"""The bridge's connection pool to dispatch-api (DISPATCH_API_MAX_CONNECTIONS) is bounded
apart from admission: calls beyond it wait for a connection within their try's time, and a
call that never got one answers `upstream_unavailable` with outcome none, having sent
nothing (bridge, fault proxy, dispatch-api, PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge._keys import CLIENT, PIPELINE
from dispatch_client import BreakerConfig, BreakerState, RetryConfig, RetryPolicy
from testkit.api import COMPLETE_TICKET, WINDOW, parsed_logs

from .conftest import Bridge
from .test_faults import events_of, rows

#: ticket.get may wait long for its answer; ticket.schedule gives up waiting for a
#: connection well before that. The breaker opens on one counted failure from one caller,
#: so a pool wait that counted against it would open it.
GET_WAITS_SCHEDULE_DOES_NOT = RetryConfig(
    default=RetryPolicy(max_attempts=1, per_try_timeout_s=10.0, deadline_s=10.0),
    tools={"ticket.schedule": RetryPolicy(max_attempts=1, per_try_timeout_s=0.3, deadline_s=0.3)},
    breaker=BreakerConfig(failure_threshold=1, min_callers=1, open_s=30.0),
)


@pytest.fixture
def bridge_overrides() -> dict[str, Any]:
    return {"api_max_connections": 2}


async def _held(bridge: Bridge, requests: int) -> None:
    """Wait (bounded) until the proxy holds an answer and has forwarded `requests`."""
    async with asyncio.timeout(5):
        await bridge.proxy.holding.wait()
        # A request count, not an event: poll it.
        while bridge.proxy.requests < requests:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_more_calls_than_pooled_connections_all_succeed_over_at_most_that_many(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.hold()
    calls = [asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid})) for _ in range(8)]
    await _held(bridge, 3)  # the create, then the two calls that got the two connections
    bridge.proxy.release()
    done = await asyncio.gather(*calls)

    assert [(r.status, r.body["ok"]) for r in done] == [(200, True)] * 8
    assert {r.body["result"]["ticket"]["id"] for r in done} == {tid}
    assert bridge.proxy.requests == 9  # each call went out exactly once
    # With every answer held, a pool as large as admission (256) would have opened eight.
    assert bridge.proxy.peak_connections <= 2


@pytest.mark.parametrize("bridge_retry", [GET_WAITS_SCHEDULE_DOES_NOT])
@pytest.mark.parametrize("bridge_overrides", [{"api_max_connections": 1}])
async def test_a_call_that_never_got_a_connection_is_upstream_unavailable_with_nothing_done(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.hold()
    holder = asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}))
    await _held(bridge, 2)  # the one connection is taken by the held ticket.get

    waited = await bridge.invoke(
        "ticket.schedule", {"ticket_id": tid, **WINDOW}, tool_call_id="pool-1"
    )
    # A busy pool says nothing about dispatch-api's health: the circuit stays closed.
    breaker = bridge.app[CLIENT].breaker.state
    bridge.proxy.release()
    held = await holder

    assert waited.status == 503, waited.body
    error = waited.body["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["retryable"] is True
    assert error["details"]["outcome"] == "none"
    assert waited.body["replayed"] is False
    assert (held.status, held.body["ok"]) == (200, True)
    assert bridge.proxy.requests == 2  # the schedule never left the bridge
    [row] = await rows(bridge.api, "SELECT state FROM tickets WHERE id = $1", tid)
    assert row["state"] == created.body["result"]["ticket"]["state"]
    assert not [e for e in await events_of(bridge.api, tid) if e["type"] == "scheduled"]
    assert breaker is BreakerState.CLOSED
    tries = [
        (line["attempt"], line["outcome"])
        for line in parsed_logs(log_lines)
        if line["event"] == "upstream_attempt" and line["tool_name"] == "ticket.schedule"
    ]
    assert tries == [(1, "PoolExhausted")]  # its one try, logged as what it was

    again = await bridge.invoke(
        "ticket.schedule", {"ticket_id": tid, **WINDOW}, tool_call_id="pool-1"
    )
    assert again.status == 200, again.body  # the same call, re-sent, is done once
    assert again.body["replayed"] is False


#: Both calls wait as long as the test needs: only the drain ends them.
WAITS = RetryConfig(
    default=RetryPolicy(max_attempts=1, per_try_timeout_s=10.0, deadline_s=10.0),
    breaker=BreakerConfig(failure_threshold=1, min_callers=1, open_s=30.0),
)


@pytest.mark.parametrize("bridge_retry", [WAITS])
@pytest.mark.parametrize("bridge_overrides", [{"api_max_connections": 1}])
async def test_a_drain_tells_a_mutation_still_waiting_for_a_connection_that_nothing_changed(
    bridge: Bridge,
) -> None:
    """Cut by the drain, a mutation that went out may have been applied (unknown); one that
    was still waiting for a connection sent nothing, and says so (none)."""
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.hold()
    sent = asyncio.create_task(
        bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW}, tool_call_id="sent-1")
    )
    await _held(bridge, 2)  # it holds the one connection, its answer held back
    waiting = asyncio.create_task(
        bridge.invoke("ticket.cancel", {"ticket_id": tid, "reason": "x"}, tool_call_id="wait-1")
    )
    await asyncio.sleep(0.2)  # admitted, and waiting for the connection
    bridge.app[PIPELINE].drain(0.1)
    cut_sent, cut_waiting = await asyncio.gather(sent, waiting)
    bridge.proxy.release()

    assert bridge.proxy.requests == 2  # the cancel never left the bridge
    for reply in (cut_sent, cut_waiting):
        assert reply.body["error"]["code"] == "deadline_exceeded"
        assert reply.body["error"]["details"]["reason"] == "bridge_draining"
    assert cut_sent.body["error"]["details"]["outcome"] == "unknown"
    assert cut_waiting.body["error"]["details"]["outcome"] == "none"
    assert "Nothing was changed" in cut_waiting.body["error"]["message"]
