"""The history check over gated calls: agents ask through the bridge to cancel, people race
to approve or deny at dispatch-api, one ticket changes first, one request expires, agents
re-send; then the database must hold exactly one effect for every executed approval and none
for any other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import aiohttp
import asyncpg

from dispatch_api.web._keys import APPROVALS
from testkit.agents import Endpoint, Recorder
from testkit.api import COMPLETE_TICKET, FakeClock, Reply
from testkit.history import Call, check
from tests.bridge.conftest import FAST_RETRIES, Bridge

#: Tickets whose cancellation two people approve at the same moment.
RACED = 4


async def _decide(bridge: Bridge, approval_id: str, decision: str, as_: str) -> Reply:
    return await bridge.api.request(
        "POST",
        f"/v1/approvals/{approval_id}/{decision}",
        json={"reason": f"{as_} says so"},
        as_=as_,
    )


async def _gated_run(
    bridge: Bridge, clock: FakeClock
) -> tuple[list[Call], list[dict[str, Any]], list[Reply]]:
    """Nine tickets, nine gated cancellations: RACED approved twice at once, two approved
    and denied at once, one gone stale, one expired, one left pending; then every call
    re-sent."""
    calls: list[Call] = []
    endpoint = Endpoint(str(bridge.session._base_url), bridge.keys["dispatcher"], "agent-disp")
    async with aiohttp.ClientSession() as http:
        agent = Recorder(http, endpoint, calls, timeout_s=10)
        tickets = []
        for i in range(RACED + 5):
            created = await agent.call("a", "ticket.create", COMPLETE_TICKET, f"create-{i}", "rest")
            assert created.result is not None, created.error
            tickets.append(created.result["ticket"]["id"])

        async def cancel(i: int, transport: str) -> Call:
            arguments = {"ticket_id": tickets[i], "reason": "customer cancelled"}
            return await agent.call("a", "ticket.cancel", arguments, f"cancel-{i}", transport)

        asked = [await cancel(i, "rest" if i % 2 else "mcp") for i in range(len(tickets) - 1)]
        stale = len(tickets) - 3
        assert {c.outcome for c in asked} == {"approval_pending"}, [c.error for c in asked]
        ids = [str((c.error or {})["details"]["approval_id"]) for c in asked]
        held = {"ticket_id": tickets[stale], "reason": "customer away", "cause": "customer"}
        await agent.call("a", "ticket.hold", held, "hold", "rest")
        races = [
            *((i, "approve", "approve", "supervisor", "dispatcher") for i in range(RACED)),
            (RACED, "approve", "deny", "supervisor", "dispatcher"),
            (RACED + 1, "deny", "approve", "dispatcher", "supervisor"),
        ]
        answers = await asyncio.gather(
            *(
                _decide(bridge, ids[i], decision, who)
                for i, first, second, one, other in races
                for decision, who in ((first, one), (second, other))
            ),
            _decide(bridge, ids[stale], "approve", "supervisor"),
        )
        clock.advance(minutes=61)  # the one nobody decided expires
        assert bridge.api.app is not None
        await bridge.api.app[APPROVALS].sweep()
        asked.append(await cancel(len(tickets) - 1, "rest"))  # and a new one waits
        assert {c.outcome for c in asked} == {"approval_pending"}, [c.error for c in asked]
        ids.append(str((asked[-1].error or {})["details"]["approval_id"]))
        views = []
        for i in range(len(tickets)):
            got = await bridge.api.request("GET", f"/v1/approvals/{ids[i]}")
            views.append(got.body["approval"])
        for i in range(len(tickets)):
            await cancel(i, "mcp" if i % 2 else "rest")
    return calls, views, list(answers)


async def test_every_executed_approval_has_one_effect_and_no_other_has_any(
    bridge: Bridge, clock: FakeClock
) -> None:
    calls, views, answers = await _gated_run(bridge, clock)

    report = await check(calls, bridge.api.database_url, retry=FAST_RETRIES)

    assert not report.violations, report.describe()
    statuses = [v["status"] for v in views]
    assert statuses[:RACED] == ["executed"] * RACED
    assert set(statuses[RACED : RACED + 2]) <= {"executed", "denied"}
    assert statuses[-3:] == ["stale", "expired", "pending"]
    assert report.approvals == Counter(statuses)
    # each race had exactly one winner; the loser was told it was already decided
    codes = Counter(a.status for a in answers[: 2 * (RACED + 2)])
    assert codes == {200: RACED + 2, 409: RACED + 2}
    assert answers[-1].status == 409
    assert answers[-1].body["code"] == "approval_stale"
    resent = calls[-len(views) :]
    for view, call in zip(views, resent, strict=True):
        expected = {
            "executed": "ok",
            "denied": "approval_denied",
            "stale": "approval_denied",
            "expired": "approval_denied",
            "pending": "approval_pending",
        }[view["status"]]
        assert call.outcome == expected, (view["status"], call.error)
    cancelled = [c for c in resent if c.ok]
    assert all(c.result and c.result["ticket"]["state"] == "CANCELLED" for c in cancelled)


async def test_the_checker_finds_an_effect_under_an_approval_nobody_granted(
    bridge: Bridge, clock: FakeClock
) -> None:
    calls, views, _ = await _gated_run(bridge, clock)
    unapproved = {
        v["request_id"]: v for v in views if v["status"] in ("pending", "denied", "expired")
    }
    conn = await asyncpg.connect(bridge.api.database_url)
    try:
        for request_id, view in unapproved.items():
            await conn.execute(
                "INSERT INTO timeline_events (ticket_id, seq, at, type, actor_type, actor_id,"
                " role, request_id) SELECT id, last_seq + 100, now(), 'cancelled', 'agent',"
                " 'agent-disp', 'dispatcher', $2 FROM tickets WHERE id = $1",
                uuid.UUID(view["ticket_id"]),
                request_id,
            )
    finally:
        await conn.close()

    report = await check(calls, bridge.api.database_url, retry=FAST_RETRIES)

    kinds = Counter(v.kind for v in report.violations)
    # the pending call's answer was never stored, so its doctored effect has no key either
    assert kinds == {"unapproved": len(unapproved), "stuck_key": 1}, report.describe()
