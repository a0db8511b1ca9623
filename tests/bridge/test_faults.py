"""Faults between the bridge and dispatch-api, end to end: the real bridge, the fault proxy,
the real dispatch-api and PostgreSQL. Each test drives one fault through a tool call and
proves from the database that the call had exactly one effect (or none), and from the answer,
the logs and the metrics what the agent and the operator see.

Already covered elsewhere, not repeated here: a lost answer to ticket.schedule / ticket.create
over REST (test_resilience.py), its retry counted by reason (test_metrics.py), the breaker
opening on an unreachable dispatch-api (test_metrics.py), the client's rules in isolation
(tests/dispatch_client).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatch_api.settings import ApiSettings
from dispatch_client import BreakerConfig, BudgetConfig, RetryConfig
from testkit.api import COMPLETE_TICKET, WINDOW, Api, parsed_logs, upstream_tries
from testkit.fault_proxy import FaultProxy
from testkit.processes import BridgeProcess

from .conftest import FAST_RETRIES, Bridge
from .test_metrics import breaker, by_labels, one, scrape

MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
TOOL_CALL_ID_META = "dispatch-bridge.dev/toolCallId"
OTHER_WINDOW = {
    **WINDOW,
    "window_start": "2026-11-27T16:00:00Z",
    "window_end": "2026-11-27T18:00:00Z",
}
#: Bound on every wait in this module, so a broken fault can fail a test but never hang it.
WAIT_S = 10.0


# --- helpers ------------------------------------------------------------------------------


async def mcp_call(
    bridge: Bridge, tool: str, arguments: dict[str, Any], *, tool_call_id: str | None = None
) -> dict[str, Any]:
    """One MCP tools/call (handshake revision, no session needed); returns the tool result."""
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if tool_call_id is not None:
        params["_meta"] = {TOOL_CALL_ID_META: tool_call_id}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    reply = await bridge.request("POST", "/mcp", data=orjson.dumps(body), headers=MCP_HEADERS)
    assert reply.status == 200, reply.raw
    result: dict[str, Any] = reply.body["result"]
    return result


def logged(log_lines: list[bytes], event: str, **match: Any) -> list[dict[str, Any]]:
    """The log lines of `event` (from both services) whose fields equal `match`."""
    return [
        line
        for line in parsed_logs(log_lines)
        if line["event"] == event and all(line.get(k) == v for k, v in match.items())
    ]


def tried(log_lines: list[bytes], **match: Any) -> list[dict[str, Any]]:
    """Every try the bridge logged (testkit.api.upstream_tries) whose fields equal `match`."""
    tries = upstream_tries(line for line in parsed_logs(log_lines) if line["service"] == "bridge")
    return [line for line in tries if all(line.get(k) == v for k, v in match.items())]


def attempts(log_lines: list[bytes], request_id: str) -> list[tuple[int, str]]:
    """(attempt, outcome) of every try the bridge made for one call, in order."""
    return [(line["attempt"], line["outcome"]) for line in tried(log_lines, request_id=request_id)]


async def api_series(api: Api) -> dict[str, float]:
    """dispatch-api's unlabelled counters, e.g. idempotency_replay_total."""
    reply = await api.request("GET", "/metrics", as_="")
    assert reply.status == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(reply.raw.decode())
        for sample in family.samples
        if not sample.labels
    }


async def rows(api: Api, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(api.database_url)
    try:
        found: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return found
    finally:
        await conn.close()


async def events_of(api: Api, ticket_id: str) -> list[asyncpg.Record]:
    """The ticket's timeline as stored, oldest first."""
    return await rows(
        api,
        "SELECT type, to_state, actor_id, tool_name, request_id FROM timeline_events"
        " WHERE ticket_id = $1 ORDER BY seq",
        ticket_id,
    )


async def new_ticket(bridge: Bridge) -> str:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    assert created.status == 200, created.body
    ticket_id: str = created.body["result"]["ticket"]["id"]
    return ticket_id


async def until(condition: Callable[[], bool]) -> None:
    """Wait (polling, bounded by WAIT_S) until `condition()` holds."""
    async with asyncio.timeout(WAIT_S):
        # What we wait for lands in a log sink (a list): there is no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["ts"]).timestamp()


@asynccontextmanager
async def database_away(
    api: Api, pg_server_url: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """dispatch-api's database refuses connections (existing ones are cut) until the block
    ends or the yielded coroutine function brings it back; dispatch-api answers 503
    `database_unavailable` with Retry-After: 1 meanwhile."""
    name = urlsplit(api.database_url).path.lstrip("/")

    async def set_accepting(accepting: bool) -> None:
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(accepting).lower()}")
            if not accepting:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
        finally:
            await admin.close()

    async def restore() -> None:
        await set_accepting(True)

    await set_accepting(False)
    try:
        yield restore
    finally:
        await restore()


#: A breaker that stays closed, for tests about something else.
NEVER_OPENS = BreakerConfig(failure_threshold=10_000)


def retry(
    *,
    budget: BudgetConfig = FAST_RETRIES.budget,
    breaker_config: BreakerConfig = NEVER_OPENS,
    **policy: Any,
) -> RetryConfig:
    """FAST_RETRIES with some policy values changed, and a breaker that stays out of the way
    unless one is given."""
    return RetryConfig(
        replace(FAST_RETRIES.default, **policy), budget=budget, breaker=breaker_config
    )


# --- 1. the same request_id twice -----------------------------------------------------------


async def test_one_tool_call_id_sent_over_rest_then_mcp_schedules_once_and_replays(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await new_ticket(bridge)
    args = {"ticket_id": tid, **WINDOW}

    first = await bridge.invoke("ticket.schedule", args, tool_call_id="call-sched-1")
    again = await bridge.invoke("ticket.schedule", args, tool_call_id="call-sched-1")
    over_mcp = await mcp_call(bridge, "ticket.schedule", args, tool_call_id="call-sched-1")

    assert first.status == again.status == 200, (first.body, again.body)
    request_id = first.body["request_id"]
    assert again.body["request_id"] == request_id  # derived from (agent, tool, tool_call_id)
    assert again.body["result"] == first.body["result"]
    assert over_mcp["isError"] is False
    assert over_mcp["structuredContent"] == first.body["result"]
    [mcp_line] = logged(log_lines, "http_request", service="bridge", endpoint="/mcp")
    assert mcp_line["request_id"] == request_id  # the same call, whichever transport
    events = await events_of(bridge.api, tid)
    assert [(e["type"], e["to_state"]) for e in events] == [
        ("created", "READY_TO_SCHEDULE"),
        ("scheduled", "SCHEDULED"),
    ]
    assert events[1]["request_id"] == request_id
    keys = await rows(bridge.api, "SELECT key FROM idempotency_keys WHERE key = $1", request_id)
    assert len(keys) == 1
    assert (await api_series(bridge.api))["idempotency_replay_total"] == 2


#: One agent re-delivering 20 copies at once is above the default per-key cap of calls in
#: flight (16, see test_isolation.py); these tests are about idempotency, so make room.
TWENTY_IN_FLIGHT = {"agent_max_in_flight": 20}


@pytest.mark.parametrize("bridge_overrides", [TWENTY_IN_FLIGHT])
async def test_twenty_concurrent_calls_with_one_tool_call_id_schedule_once(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await new_ticket(bridge)
    args = {"ticket_id": tid, **WINDOW}

    replies = await asyncio.wait_for(
        asyncio.gather(
            *(bridge.invoke("ticket.schedule", args, tool_call_id="call-burst") for _ in range(20))
        ),
        WAIT_S,
    )

    request_ids = {r.body["request_id"] for r in replies}
    assert len(request_ids) == 1
    [request_id] = request_ids
    answered = [r for r in replies if r.status == 200]
    busy = [r for r in replies if r.status != 200]
    assert answered, [r.body for r in replies]
    for reply in answered:
        assert reply.body["result"] == answered[0].body["result"]
    for reply in busy:  # only "come back shortly" is allowed besides the answer
        assert (reply.status, reply.body["error"]["code"]) == (409, "in_progress"), reply.body
        assert reply.body["error"]["retryable"] is True
    for _ in busy:
        later = await bridge.invoke("ticket.schedule", args, tool_call_id="call-burst")
        assert later.status == 200
        assert later.body["result"] == answered[0].body["result"]
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    assert events[1]["request_id"] == request_id
    # Every try of every copy carried the one request_id; all but one answer were replays.
    tries = tried(log_lines, tool_name="ticket.schedule")
    assert {line["request_id"] for line in tries} == {request_id}
    assert (await api_series(bridge.api))["idempotency_replay_total"] == 20 - 1


@pytest.mark.parametrize(
    ("bridge_retry", "api_settings", "bridge_overrides"),
    [
        (
            retry(max_attempts=1),
            ApiSettings(db_pool_min=1, db_pool_max=8, db_lock_timeout_ms=200),
            TWENTY_IN_FLIGHT,
        )
    ],
)
async def test_concurrent_copies_told_in_progress_replay_the_one_effect_when_retried(
    bridge: Bridge,
) -> None:
    tid = await new_ticket(bridge)
    args = {"ticket_id": tid, **WINDOW}
    # Another writer holds the ticket for longer than dispatch-api's lock timeout, so every
    # copy finds the ticket or its idempotency key busy; the bridge does not retry (1 try).
    other_writer = await asyncpg.connect(bridge.api.database_url)
    try:
        lock = other_writer.transaction()
        await lock.start()
        await other_writer.execute("SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", tid)
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(
                    bridge.invoke("ticket.schedule", args, tool_call_id="call-busy")
                    for _ in range(20)
                )
            ),
            WAIT_S,
        )
        await lock.rollback()
    finally:
        await other_writer.close()
    nothing_yet = await events_of(bridge.api, tid)

    # Each agent, told to come back, does (one after the other: no contention this time).
    retried = [
        await bridge.invoke("ticket.schedule", args, tool_call_id="call-busy") for _ in replies
    ]

    for reply in replies:
        assert reply.status == 409, reply.body
        assert reply.body["error"]["code"] == "in_progress"
        assert reply.body["error"]["retryable"] is True
        assert reply.headers["Retry-After"] == "1"
        assert reply.body["error"]["details"]["upstream_code"] in (
            "ticket_busy",
            "request_in_progress",
        )
    assert [e["type"] for e in nothing_yet] == ["created"]
    assert {r.status for r in retried} == {200}, [r.body for r in retried]
    assert len({orjson.dumps(r.body["result"]) for r in retried}) == 1
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    assert events[1]["request_id"] == replies[0].body["request_id"]
    assert (await api_series(bridge.api))["idempotency_replay_total"] == 20 - 1


# --- 2. the same request_id with other arguments --------------------------------------------


async def test_a_tool_call_id_reused_with_other_arguments_conflicts_is_counted_and_logged(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await new_ticket(bridge)
    first = await bridge.invoke(
        "ticket.schedule", {"ticket_id": tid, **WINDOW}, tool_call_id="call-7"
    )

    reused = await bridge.invoke(
        "ticket.schedule", {"ticket_id": tid, **OTHER_WINDOW}, tool_call_id="call-7"
    )
    over_mcp = await mcp_call(
        bridge, "ticket.schedule", {"ticket_id": tid, **OTHER_WINDOW}, tool_call_id="call-7"
    )

    assert first.status == 200, first.body
    assert reused.status == 422, reused.body
    assert reused.body["request_id"] == first.body["request_id"]
    error = reused.body["error"]
    assert (error["code"], error["retryable"]) == ("idempotency_conflict", False)
    assert "new tool_call_id" in error["message"]
    assert over_mcp["isError"] is True
    envelope = orjson.loads(over_mcp["content"][0]["text"])
    assert envelope["error"]["code"] == "idempotency_conflict"
    # Nothing changed: one schedule, the first window.
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    [ticket] = await rows(bridge.api, "SELECT window_start FROM tickets WHERE id = $1", tid)
    assert ticket["window_start"].isoformat() == "2026-11-27T13:00:00+00:00"
    # Counted where it was detected, and by the bridge per tool and code.
    assert (await api_series(bridge.api))["idempotency_conflict_total"] == 2
    series, _ = await scrape(bridge)
    assert (
        one(
            series,
            "tool_invocations_total",
            {"tool": "ticket.schedule", "code": "idempotency_conflict"},
        )
        == 2
    )
    # Logged by dispatch-api with the acting agent, its tool and the request_id.
    conflicts = logged(log_lines, "http_request", service="dispatch-api", status_code=422)
    assert len(conflicts) == 2
    for line in conflicts:
        assert line["error_code"] == "idempotency_conflict"
        assert (line["actor_type"], line["actor_id"], line["role"]) == (
            "agent",
            "agent-sup",
            "supervisor",
        )
        assert line["tool_name"] == "ticket.schedule"
        assert line["request_id"] == first.body["request_id"]
        assert line["ticket_id"] == tid


# --- 3. the answer lost after the commit (REST schedule/create: test_resilience.py) ---------


async def on_site_ticket(bridge: Bridge, *, evidence: bool) -> str:
    tid = await new_ticket(bridge)
    for tool, args in (
        ("ticket.schedule", WINDOW),
        ("ticket.dispatch", {}),
        ("tech.arrive", {}),
    ):
        reply = await bridge.invoke(tool, {"ticket_id": tid, **args})
        assert reply.status == 200, reply.body
    for kind, tag in (("photo", "before"), ("photo", "after"), ("signature", "customer")):
        if not evidence:
            break
        reply = await bridge.invoke("evidence.attach", evidence_item(tid, kind, tag))
        assert reply.status == 200, reply.body
    return tid


def evidence_item(tid: str, kind: str, tag: str) -> dict[str, Any]:
    return {
        "ticket_id": tid,
        "kind": kind,
        "tag": tag,
        "content_type": "image/jpeg",
        "content_base64": "aGk=",
    }


async def test_a_lost_answer_to_an_mcp_evidence_attach_stores_the_item_once(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await on_site_ticket(bridge, evidence=False)
    before = bridge.proxy.requests
    bridge.proxy.drop_responses = 1

    result = await mcp_call(bridge, "evidence.attach", evidence_item(tid, "photo", "before"))

    assert result["isError"] is False, result
    assert bridge.proxy.requests - before == 2  # the try whose answer was lost, and its retry
    assert bridge.proxy.faults["drop"] == 1
    stored = await rows(bridge.api, "SELECT id, request_id FROM evidence WHERE ticket_id = $1", tid)
    assert len(stored) == 1
    [event] = [e for e in await events_of(bridge.api, tid) if e["type"] == "evidence_attached"]
    assert event["request_id"] == stored[0]["request_id"]
    assert attempts(log_lines, event["request_id"]) == [(1, "TransportFailure"), (2, "ok")]
    assert (await api_series(bridge.api))["idempotency_replay_total"] == 1


async def test_a_lost_answer_to_an_mcp_completion_completes_the_job_once(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await on_site_ticket(bridge, evidence=True)
    bridge.proxy.drop_responses = 1

    result = await mcp_call(bridge, "tech.complete", {"ticket_id": tid}, tool_call_id="done-1")

    assert result["isError"] is False, result
    assert result["structuredContent"]["ticket"]["state"] == "COMPLETED"
    # The replay answered the bridge's own retry: to the agent it is this call's outcome.
    assert "_meta" not in result
    events = await events_of(bridge.api, tid)
    completed = [e for e in events if e["to_state"] == "COMPLETED"]
    assert len(completed) == 1
    assert completed[0]["tool_name"] == "tech.complete"
    assert attempts(log_lines, completed[0]["request_id"]) == [(1, "TransportFailure"), (2, "ok")]
    # dispatch-api heard both tries under the one request_id: it applied the first (whose
    # answer the proxy lost) and replayed it to the second.
    heard = logged(
        log_lines, "http_request", service="dispatch-api", request_id=completed[0]["request_id"]
    )
    assert [line["status_code"] for line in heard] == [200, 200]
    assert (await api_series(bridge.api))["idempotency_replay_total"] == 1


# --- 4. the request lost before arrival -----------------------------------------------------


async def test_a_request_reset_before_arrival_is_applied_once_by_the_retry(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await new_ticket(bridge)
    before = bridge.proxy.requests
    bridge.proxy.reset_requests = 1

    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})

    assert reply.status == 200, reply.body
    assert reply.body["result"]["ticket"]["state"] == "SCHEDULED"
    request_id = reply.body["request_id"]
    assert bridge.proxy.faults["reset"] == 1
    assert bridge.proxy.requests - before == 1  # only the retry arrived
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    assert events[1]["request_id"] == request_id
    assert attempts(log_lines, request_id) == [(1, "TransportFailure"), (2, "ok")]
    # dispatch-api heard the call once: the retry was a first arrival, not a replay.
    assert (
        len(logged(log_lines, "http_request", service="dispatch-api", request_id=request_id)) == 1
    )
    assert (await api_series(bridge.api))["idempotency_replay_total"] == 0
    series, _ = await scrape(bridge)
    assert by_labels(series, "tool_retries_total", "tool", "reason") == {
        ("ticket.schedule", "connect"): 1.0
    }


# --- 5. latency above the per-try timeout, within the deadline ------------------------------

SLOW_TRIES = retry(per_try_timeout_s=0.3, deadline_s=3.0)


async def replays(bridge: Bridge) -> float:
    """dispatch-api's idempotency replays so far. Tests under SLOW_TRIES count from after
    the ticket's creation: on a loaded machine its own try may pass 0.3 s and be retried,
    then replayed (one `make check` counted 4 replays in all where the schedule makes 3;
    the creation is the likely fourth, not confirmed)."""
    return (await api_series(bridge.api))["idempotency_replay_total"]


@pytest.mark.parametrize("bridge_retry", [SLOW_TRIES])
async def test_a_first_answer_slower_than_the_per_try_timeout_is_retried_and_replayed(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await new_ticket(bridge)
    before = await replays(bridge)
    bridge.proxy.hold()  # answers wait: the first try times out while its answer is held

    async def release_after_the_first_timeout() -> None:
        await until(lambda: bool(logged(log_lines, "upstream_attempt", outcome="AttemptTimedOut")))
        bridge.proxy.release()

    releaser = asyncio.create_task(release_after_the_first_timeout())
    started = time.monotonic()
    reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    elapsed = time.monotonic() - started
    await asyncio.wait_for(releaser, WAIT_S)

    assert reply.status == 200, reply.body
    assert elapsed < SLOW_TRIES.default.deadline_s
    request_id = reply.body["request_id"]
    assert attempts(log_lines, request_id) == [(1, "AttemptTimedOut"), (2, "ok")]
    # The slow first try committed; the retry got its stored answer.
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    assert events[1]["request_id"] == request_id
    assert await replays(bridge) - before == 1
    series, _ = await scrape(bridge)
    assert one(series, "tool_retries_total", {"tool": "ticket.schedule", "reason": "timeout"}) == 1


@pytest.mark.parametrize("bridge_retry", [SLOW_TRIES])
async def test_persistent_latency_ends_within_the_deadline_after_bounded_tries_with_one_effect(
    bridge: Bridge, log_lines: list[bytes]
) -> None:
    tid = await new_ticket(bridge)
    before = await replays(bridge)
    args = {"ticket_id": tid, **WINDOW}
    bridge.proxy.delay_s = 1.0  # every answer: beyond the per-try timeout

    started = time.monotonic()
    reply = await bridge.invoke("ticket.schedule", args, tool_call_id="slow-1")
    elapsed = time.monotonic() - started
    bridge.proxy.delay_s = 0.0
    again = await bridge.invoke("ticket.schedule", args, tool_call_id="slow-1")

    assert reply.status == 504, reply.body
    assert reply.body["error"]["code"] == "upstream_timeout"
    assert reply.body["error"]["retryable"] is True
    assert elapsed < SLOW_TRIES.default.deadline_s
    request_id = reply.body["request_id"]
    timed_out = [(n, "AttemptTimedOut") for n in range(1, SLOW_TRIES.default.max_attempts + 1)]
    assert attempts(log_lines, request_id) == [*timed_out, (1, "ok")]  # then the agent's retry
    # The agent, told it may retry with the same tool_call_id, gets the one effect's answer.
    assert again.status == 200, again.body
    assert again.body["request_id"] == request_id
    assert again.body["result"]["ticket"]["state"] == "SCHEDULED"
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    assert events[1]["request_id"] == request_id
    assert await replays(bridge) - before == 3


# --- 7. 503 with Retry-After; sustained failure: budget and breaker -------------------------
# dispatch-api answers 503 `database_unavailable` with Retry-After: 1 while its database is away.


@pytest.mark.parametrize("bridge_retry", [retry(max_attempts=2, retry_after_cap_s=2.0)])
async def test_a_503_with_retry_after_is_retried_no_sooner_than_it_says_and_applied_once(
    bridge: Bridge, log_lines: list[bytes], pg_server_url: str
) -> None:
    tid = await new_ticket(bridge)

    def first_503() -> bool:
        return bool(logged(log_lines, "upstream_attempt", outcome="ProblemResponse"))

    async with database_away(bridge.api, pg_server_url) as restore:

        async def restore_after_the_first_503() -> None:
            await until(first_503)
            await restore()  # before the retry, which waits out the Retry-After first

        restoring = asyncio.create_task(restore_after_the_first_503())
        reply = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
        await asyncio.wait_for(restoring, WAIT_S)

    assert reply.status == 200, reply.body
    request_id = reply.body["request_id"]
    assert attempts(log_lines, request_id) == [(1, "ProblemResponse"), (2, "ok")]
    heard = logged(log_lines, "http_request", service="dispatch-api", request_id=request_id)
    assert [(h["status_code"], h.get("error_code")) for h in heard] == [
        (503, "database_unavailable"),
        (200, None),
    ]
    # The second try started at least the Retry-After (1 s) after the first ended.
    ended, second = logged(log_lines, "upstream_attempt", request_id=request_id)
    assert ts(second) - second["latency_ms"] / 1000 - ts(ended) >= 1.0 - 0.002
    events = await events_of(bridge.api, tid)
    assert [e["type"] for e in events] == ["created", "scheduled"]
    series, _ = await scrape(bridge)
    assert one(series, "tool_retries_total", {"tool": "ticket.schedule", "reason": "http_503"}) == 1


CAPPED = retry(max_attempts=3, per_try_timeout_s=0.5, deadline_s=0.9, retry_after_cap_s=0.25)


@pytest.mark.parametrize("bridge_retry", [CAPPED])
async def test_a_retry_after_longer_than_the_cap_waits_only_the_cap(
    bridge: Bridge, log_lines: list[bytes], pg_server_url: str
) -> None:
    async with database_away(bridge.api, pg_server_url):
        reply = await bridge.invoke("queue.view", {})

    assert reply.status == 503, reply.body
    error = reply.body["error"]
    assert (error["code"], error["retryable"], error["retry_after_ms"]) == (
        "upstream_unavailable",
        True,
        1000,  # dispatch-api's Retry-After, passed on to the agent
    )
    tries = logged(log_lines, "upstream_attempt", request_id=reply.body["request_id"])
    # Retry-After: 1 honoured as is would not fit in the 0.9 s deadline: one try only. Capped
    # at 0.25 s it leaves room for a retry, which waits the cap.
    assert len(tries) >= 2
    assert {t["outcome"] for t in tries} == {"ProblemResponse"}
    for ended, second in itertools.pairwise(tries):
        assert ts(second) - second["latency_ms"] / 1000 - ts(ended) >= 0.25 - 0.002


BUDGET = BudgetConfig(ratio=0.2, min_retries_per_s=1.0, max_tokens=2.0)


@pytest.mark.parametrize(
    "bridge_retry", [retry(max_attempts=3, retry_after_cap_s=0.0, budget=BUDGET)]
)
async def test_sustained_503s_add_at_most_the_retry_budget_to_the_load(
    bridge: Bridge, pg_server_url: str
) -> None:
    calls = 30
    async with database_away(bridge.api, pg_server_url):
        before = bridge.proxy.requests
        started = time.monotonic()
        replies = [await bridge.invoke("queue.view", {}) for _ in range(calls)]
        elapsed = time.monotonic() - started
        tries = bridge.proxy.requests - before
    series, _ = await scrape(bridge)

    assert {(r.status, r.body["error"]["code"]) for r in replies} == {(503, "upstream_unavailable")}
    # Each call deposits `ratio` of a retry, time deposits `min_retries_per_s`, and the bucket
    # starts full (_budget.py): that, not max_attempts x calls (90), bounds the load.
    bound = calls * (1 + BUDGET.ratio) + BUDGET.max_tokens + BUDGET.min_retries_per_s * elapsed
    assert calls + BUDGET.max_tokens <= tries <= bound, (tries, bound)
    assert one(series, "retry_budget_exhausted_total", {"downstream": "dispatch-api"}) >= 1
    assert by_labels(series, "tool_retries_total", "tool", "reason") == {
        ("queue.view", "http_503"): tries - calls
    }
    assert (
        one(
            series, "tool_invocations_total", {"tool": "queue.view", "code": "upstream_unavailable"}
        )
        == calls
    )
    assert breaker(series)["closed"] == 1.0


TRIP_AT_3 = retry(
    max_attempts=3,
    retry_after_cap_s=0.0,
    breaker_config=BreakerConfig(failure_threshold=3, open_s=60),
)


@pytest.mark.parametrize("bridge_retry", [TRIP_AT_3])
async def test_sustained_503s_open_the_breaker_calls_fail_fast_and_readyz_says_why(
    bridge: Bridge, log_lines: list[bytes], pg_server_url: str
) -> None:
    tid = await new_ticket(bridge)
    async with database_away(bridge.api, pg_server_url) as restore:
        tripping = await bridge.invoke("queue.view", {})
        before = bridge.proxy.requests
        fast = [
            await bridge.invoke("queue.view", {}),
            await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW}),
        ]
        await restore()
        fast.append(await bridge.invoke("queue.view", {}))  # dispatch-api is back; still open
        sent_while_open = bridge.proxy.requests - before
    ready = await bridge.request("GET", "/readyz", as_="")
    series, _ = await scrape(bridge)

    assert tripping.body["error"]["code"] == "upstream_unavailable"
    assert attempts(log_lines, tripping.body["request_id"]) == [
        (n, "ProblemResponse") for n in (1, 2, 3)
    ]
    assert sent_while_open == 0
    for reply in fast:
        assert reply.status == 503, reply.body
        error = reply.body["error"]
        assert (error["code"], error["retryable"]) == ("upstream_unavailable", True)
        assert 50_000 <= error["retry_after_ms"] <= 60_000  # the breaker's remaining open time
        assert attempts(log_lines, reply.body["request_id"]) == []
    # /readyz says why calls fail fast, but stays 200: the breaker is about the shared
    # dispatch-api, and taking every replica out of rotation would help nobody (issue 14).
    assert ready.status == 200
    assert (ready.body["status"], ready.body["dispatch_api"], ready.body["breaker"]) == (
        "ready",
        "ok",
        "open",
    )
    assert breaker(series) == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    assert [e["type"] for e in await events_of(bridge.api, tid)] == ["created"]


# --- 8. the agent hangs up mid-backoff -------------------------------------------------------
# Served as in production (`dispatch-bridge serve-bridge`): how the server treats a client that
# goes away is a setting of the runner, which an in-process test server would not share.


@pytest.fixture
async def api_link(api: Api) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the test's dispatch-api."""
    assert api.session._base_url is not None
    upstream = api.session._base_url
    proxy = FaultProxy(upstream.host or "127.0.0.1", upstream.port or 80)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def served_bridge(
    api: Api, api_link: FaultProxy, tmp_path: Path
) -> AsyncIterator[BridgeProcess]:
    # A 503's Retry-After (1 s) is honoured: the bridge sleeps a whole second between tries.
    retry = {
        "max_attempts": 3,
        "per_try_timeout_s": 2.0,
        "deadline_s": 10.0,
        "retry_after_cap_s": 5.0,
    }
    async with BridgeProcess(api_link.url, api.tokens["gateway"], tmp_path, retry=retry) as b:
        yield b


async def test_an_agent_hanging_up_mid_backoff_stops_the_call_before_its_next_try(
    served_bridge: BridgeProcess, api_link: FaultProxy, api: Api, pg_server_url: str
) -> None:
    key = served_bridge.keys["agent-sup"]
    ticket = await api.create_ticket()
    body = orjson.dumps({"arguments": {"ticket_id": ticket["id"], **WINDOW}})
    request = (
        b"POST /v1/tools/ticket.schedule/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    before = api_link.requests

    async with database_away(api, pg_server_url):
        _, agent = await asyncio.open_connection("127.0.0.1", served_bridge.port)
        agent.write(request)
        await agent.drain()
        # The first try is answered 503 + Retry-After: 1; the bridge now sleeps a second.
        await until(
            lambda: bool(served_bridge.logged("upstream_attempt", outcome="ProblemResponse"))
        )
        agent.close()  # the agent gives up on the call
        await agent.wait_closed()
        # The bridge's line for the call: at once if it stops, after its retries if not.
        await until(
            lambda: bool(served_bridge.logged("http_request", endpoint="/v1/tools/{name}/invoke"))
        )
        sent = api_link.requests - before

    [call] = served_bridge.logged("http_request", endpoint="/v1/tools/{name}/invoke")
    assert call["status_code"] == 499  # the client went away before the answer
    assert sent == 1  # no try after the hang-up
    assert [(a["attempt"], a["outcome"]) for a in served_bridge.logged("upstream_attempt")] == [
        (1, "ProblemResponse")
    ]
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(served_bridge.url, headers=headers) as http:
        async with http.get("/v1/ops/inflight") as resp:
            inflight = await resp.json()
        async with http.get("/metrics") as resp:
            exposition = await resp.text()
    assert inflight["count"] == 0
    assert 'tool_calls_in_flight{tool="ticket.schedule"} 0.0' in exposition
    stored = await rows(api, "SELECT type FROM timeline_events WHERE ticket_id = $1", ticket["id"])
    assert [e["type"] for e in stored] == ["created"]
