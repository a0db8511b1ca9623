"""Retries keep their promise end to end: one request_id per call, one effect per call."""

from __future__ import annotations

import asyncio

import pytest

from testkit.api import COMPLETE_TICKET, WINDOW

from .conftest import Bridge


async def test_a_response_lost_after_commit_is_replayed_not_applied_twice(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    before = bridge.proxy.requests
    bridge.proxy.drop_responses = 1

    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})

    assert reply.status == 200, reply.body
    assert reply.body["result"]["ticket"]["state"] == "SCHEDULED"
    assert bridge.proxy.requests - before == 2  # the lost try and its replayed retry
    events = await bridge.api.timeline(tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    assert events[1]["request_id"] == reply.body["request_id"]


async def test_a_lost_create_response_still_creates_exactly_one_ticket(bridge: Bridge) -> None:
    bridge.proxy.drop_responses = 1

    reply = await bridge.invoke("ticket.create", COMPLETE_TICKET)

    assert reply.status == 200, reply.body
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 1
    assert await bridge.api.count("SELECT count(*) FROM idempotency_keys") == 1


async def test_an_unreachable_dispatch_api_is_upstream_unavailable_and_readyz_reports_it(
    bridge: Bridge,
) -> None:
    await bridge.proxy.close()

    reply = await bridge.invoke("queue.view", {})
    ready = await bridge.request("GET", "/readyz", as_="")

    assert reply.status == 503
    assert reply.body["error"]["code"] == "upstream_unavailable"
    assert reply.body["error"]["retryable"] is True
    assert reply.body["error"]["retry_after_ms"] > 0
    # Still ready: every replica shares dispatch-api, so readiness must not pull them all
    # out (agents keep getting upstream_unavailable with a retry hint, not an LB error).
    assert ready.status == 200
    assert (ready.body["status"], ready.body["dispatch_api"]) == ("ready", "unreachable")


async def test_calls_in_flight_are_listed_oldest_first_with_their_ids(bridge: Bridge) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.hold()
    call = asyncio.create_task(bridge.invoke("ticket.get", {"ticket_id": tid}))
    await asyncio.wait_for(bridge.proxy.holding.wait(), 5)

    listing = await bridge.request("GET", "/v1/ops/inflight")
    bridge.proxy.release()
    reply = await call

    assert listing.status == 200
    [entry] = listing.body["calls"]
    assert (entry["tool"], entry["ticket_id"], entry["actor_id"]) == (
        "ticket.get",
        tid,
        "agent-sup",
    )
    assert entry["request_id"] == reply.body["request_id"]
    assert entry["age_ms"] >= 0
    after = await bridge.request("GET", "/v1/ops/inflight")
    assert after.body["count"] == 0


async def test_calls_in_flight_are_for_supervisors_only(bridge: Bridge) -> None:
    reply = await bridge.request("GET", "/v1/ops/inflight", as_="dispatcher")

    assert reply.status == 403
    assert reply.body["code"] == "forbidden"


@pytest.mark.parametrize("bridge_overrides", [{"rate_limit_per_s": 0.5, "rate_limit_burst": 2}])
async def test_an_agent_over_its_rate_limit_is_told_when_to_retry(bridge: Bridge) -> None:
    replies = [await bridge.invoke("queue.view", {}) for _ in range(3)]

    assert [r.status for r in replies] == [200, 200, 429]
    error = replies[2].body["error"]
    assert error["code"] == "rate_limited"
    assert error["retryable"] is True
    assert 1000 <= error["retry_after_ms"] <= 2000
    assert replies[2].headers["Retry-After"] == "2"
    other = await bridge.invoke("queue.view", {}, as_="dispatcher")
    assert other.status == 200  # limits are per key
