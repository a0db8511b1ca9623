"""Honest answers, end to end (bridge, fault proxy, dispatch-api, PostgreSQL): every tool
error says what is known of its effect (`details.outcome`), judged from all the call's
tries, and a replayed answer is marked as one, over REST and over MCP (official client)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, cast

import pytest
from mcp.types import CallToolResult, RequestParamsMeta

from bridge._keys import CLIENT
from dispatch_client import BreakerConfig, BreakerState, RetryConfig, RetryPolicy
from testkit.api import COMPLETE_TICKET, WINDOW

from .conftest import Bridge
from .test_faults import events_of, evidence_item, on_site_ticket, rows
from .test_mcp_client import mcp_client, succeeded, tool_error

#: Short tries, one retry, and a breaker that opens on the first failure: a try that times
#: out after its request went out opens the circuit, and the retry meets it open. Only the
#: breaker test uses it: on a loaded 2-core CI machine any slow call would trip it.
TRIP_ON_FIRST_FAILURE = RetryConfig(
    default=RetryPolicy(
        max_attempts=2,
        per_try_timeout_s=1.0,
        deadline_s=5.0,
        base_backoff_s=0.01,
        max_backoff_s=0.02,
    ),
    breaker=BreakerConfig(failure_threshold=1, open_s=1.0),
)
#: Longer than one try: the answer comes after dispatch-api committed, and is lost.
SLOW_ANSWER_S = 2.0
WAIT_S = 10.0
REPLAYED_META = "dispatch-bridge.dev/replayed"
EVIDENCE = (("photo", "before"), ("photo", "after"), ("signature", "customer"))


async def _bounded(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll `condition()` (async) until it holds, at most WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        # What we wait for is a database row or the breaker's clock: no event to await.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _state(bridge: Bridge, tid: str) -> str:
    [row] = await rows(bridge.api, "SELECT state FROM tickets WHERE id = $1", tid)
    return str(row["state"])


@pytest.mark.parametrize("bridge_retry", [TRIP_ON_FIRST_FAILURE])
async def test_a_committed_try_that_timed_out_then_met_the_open_breaker_is_unknown_not_nothing(
    bridge: Bridge,
) -> None:
    """The reported bug: try 1 reached dispatch-api and committed, its answer came too late;
    the retry was refused by the breaker try 1 opened. The answer must not say nothing was
    changed: it says the outcome is unknown, and the re-send with the same tool_call_id,
    once the breaker has closed, returns the one effect as a replay."""
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    bridge.proxy.delay_s = SLOW_ANSWER_S

    first = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW}, tool_call_id="s-1")

    bridge.proxy.delay_s = 0.0
    assert first.status == 503, first.body
    error = first.body["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["details"]["outcome"] == "unknown"
    assert "nothing was changed" not in error["message"].lower()
    assert "same tool_call_id" in error["message"]
    assert first.body["replayed"] is False
    assert bridge.proxy.requests == 2  # create, and the one try of schedule that went out

    async def scheduled() -> bool:
        return await _state(bridge, tid) == "SCHEDULED"

    await _bounded(scheduled)  # it had been applied: "nothing was changed" would be a lie
    breaker = bridge.app[CLIENT].breaker

    async def closed_enough() -> bool:
        return breaker.state is not BreakerState.OPEN

    await _bounded(closed_enough)

    again = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW}, tool_call_id="s-1")

    assert again.status == 200, again.body
    assert again.body["replayed"] is True
    assert again.body["request_id"] == first.body["request_id"]
    effects = [e for e in await events_of(bridge.api, tid) if e["type"] == "scheduled"]
    assert [e["request_id"] for e in effects] == [first.body["request_id"]]


async def test_a_redelivered_call_is_marked_replayed_over_rest_and_a_fresh_one_is_not(
    bridge: Bridge,
) -> None:
    fresh = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="create-1")
    again = await bridge.invoke("ticket.create", COMPLETE_TICKET, tool_call_id="create-1")

    assert (fresh.status, again.status) == (200, 200)
    assert fresh.body["replayed"] is False
    assert again.body["replayed"] is True
    assert again.body["result"] == fresh.body["result"]
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 1


async def test_a_replayed_evidence_refusal_sends_the_agent_to_a_new_tool_call_id_not_round_again(
    bridge: Bridge,
) -> None:
    """The reported loop: after all evidence is attached, re-sending tech.complete with the
    old tool_call_id replays the stored refusal. It is marked as a replay and says a new
    attempt needs a new tool_call_id; with one, the job completes."""
    tid = await on_site_ticket(bridge, evidence=False)
    complete = {"ticket_id": tid}
    refused = await bridge.invoke("tech.complete", complete, as_="technician", tool_call_id="c-1")
    for kind, tag in EVIDENCE:
        attached = await bridge.invoke("evidence.attach", evidence_item(tid, kind, tag))
        assert attached.status == 200, attached.body

    replay = await bridge.invoke("tech.complete", complete, as_="technician", tool_call_id="c-1")

    assert refused.body["replayed"] is False
    assert "call tech.complete again" in refused.body["error"]["message"]
    assert replay.status == 422
    assert replay.body["replayed"] is True
    error = replay.body["error"]
    assert error["code"] == "evidence_missing"
    assert error["details"]["outcome"] == "none"
    assert "stored outcome of an earlier call with this tool_call_id" in error["message"]
    assert "NEW tool_call_id" in error["message"]
    assert "call tech.complete again" not in error["message"]
    assert await _state(bridge, tid) == "ON_SITE"

    done = await bridge.invoke("tech.complete", complete, as_="technician", tool_call_id="c-2")

    assert done.status == 200, done.body
    assert done.body["replayed"] is False
    assert await _state(bridge, tid) == "COMPLETED"


def _call_id(value: str) -> RequestParamsMeta:
    # RequestParamsMeta is an open TypedDict (PEP 728 extra_items), which mypy cannot read yet.
    return cast(RequestParamsMeta, {"dispatch-bridge.dev/toolCallId": value})


def _replayed(result: CallToolResult) -> bool:
    return bool((result.meta or {}).get(REPLAYED_META))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_mcp_results_carry_replayed_in_meta_for_replayed_successes_and_errors(
    bridge: Bridge, mode: Literal["legacy", "auto"]
) -> None:
    tid = await on_site_ticket(bridge, evidence=False)
    async with mcp_client(bridge, "technician", mode) as client:
        args = {"ticket_id": tid}
        refused = await client.call_tool("tech.complete", args, meta=_call_id("m-1"))
        for kind, tag in EVIDENCE:
            once = await client.call_tool(
                "evidence.attach", evidence_item(tid, kind, tag), meta=_call_id(f"e-{tag}")
            )
            twice = await client.call_tool(
                "evidence.attach", evidence_item(tid, kind, tag), meta=_call_id(f"e-{tag}")
            )
            assert (_replayed(once), _replayed(twice)) == (False, True)
            assert succeeded(twice) == succeeded(once)
        replayed_refusal = await client.call_tool("tech.complete", args, meta=_call_id("m-1"))

    assert _replayed(refused) is False
    assert _replayed(replayed_refusal) is True
    error = tool_error(replayed_refusal)
    assert error["code"] == "evidence_missing"
    assert "NEW tool_call_id" in error["message"]
    evidence = await bridge.api.count("SELECT count(*) FROM evidence WHERE ticket_id = $1", tid)
    assert evidence == len(EVIDENCE)
