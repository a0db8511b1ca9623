"""Exactly once: approvers racing each other or the expiry sweep decide an approval once,
and the bound call takes effect at most once; the sweep expires once and the metrics say so."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatch_api.settings import ApiSettings
from dispatch_api.web._keys import APPROVALS
from testkit.api import Api
from testkit.approvals import cancel_call, decide, event_types, statuses

ROUNDS = 5


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    # The test runs the sweep itself, when it means to (the loop's first pass finds nothing).
    return replace(api_settings, approvals_sweep_interval_s=3600)


async def pending_cancel(api: Api) -> tuple[str, str]:
    ticket = await api.create_ticket()
    reply = await cancel_call(api, ticket["id"]).send()
    assert reply.status == 202, reply.body
    return ticket["id"], reply.body["approval"]["id"]


def samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


async def scrape(api: Api, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    reply = await api.request("GET", "/metrics", as_="")
    assert reply.status == 200
    return samples(reply.raw.decode(), name)


async def test_two_approvers_racing_execute_the_call_once(api: Api) -> None:
    for _ in range(ROUNDS):
        ticket_id, approval_id = await pending_cancel(api)

        replies = await asyncio.gather(
            decide(api, approval_id, "approve", as_="supervisor"),
            decide(api, approval_id, "approve", as_="dispatcher"),
        )

        assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
        loser = next(r for r in replies if r.status == 409)
        assert loser.body["code"] == "approval_decided"
        assert loser.body["approval"]["status"] == "executed"
        assert Counter(await event_types(api, ticket_id)) == Counter(
            {"created": 1, "approval_requested": 1, "approval_granted": 1, "cancelled": 1}
        )
    assert await statuses(api) == ["executed"] * ROUNDS


async def test_approve_racing_the_expiry_sweep_past_expiry_expires_it_once(api: Api) -> None:
    service = api.app
    assert service is not None
    made = [await pending_cancel(api) for _ in range(ROUNDS)]
    api.clock.advance(minutes=61)

    for ticket_id, approval_id in made:
        approved, _ = await asyncio.gather(
            decide(api, approval_id, "approve"), service[APPROVALS].sweep()
        )

        assert approved.status == 409
        assert approved.body["code"] in ("approval_expired", "approval_decided")
        assert approved.body["approval"]["status"] == "expired"
        types = await event_types(api, ticket_id)
        assert types == ["created", "approval_requested", "approval_expired"]
    assert await statuses(api) == ["expired"] * ROUNDS


async def test_approve_racing_the_sweep_before_expiry_executes_and_nothing_expires(
    api: Api,
) -> None:
    assert api.app is not None
    for _ in range(ROUNDS):
        ticket_id, approval_id = await pending_cancel(api)

        approved, expired = await asyncio.gather(
            decide(api, approval_id, "approve"), api.app[APPROVALS].sweep()
        )

        assert approved.status == 200, approved.body
        assert expired == 0
        assert (await event_types(api, ticket_id))[-1] == "cancelled"
    assert await statuses(api) == ["executed"] * ROUNDS


async def test_the_sweep_expires_a_pending_approval_once_and_the_metrics_follow(
    api: Api,
) -> None:
    assert api.app is not None
    sweep = api.app[APPROVALS].sweep
    ticket_id, _ = await pending_cancel(api)
    call_tool = (("tool", "ticket.cancel"),)
    await sweep()
    api.clock.advance(minutes=30)
    await sweep()  # refreshes the gauges: one waiting, for 30 minutes
    pending_before = await scrape(api, "approvals_pending")
    oldest_before = await scrape(api, "approvals_oldest_pending_seconds")

    api.clock.advance(minutes=31)
    first, second = await sweep(), await sweep()

    assert (first, second) == (1, 0)
    assert pending_before[call_tool] == 1
    assert oldest_before[call_tool] == 1800
    assert (await scrape(api, "approvals_pending"))[call_tool] == 0
    assert (await scrape(api, "approvals_oldest_pending_seconds"))[call_tool] == 0
    decisions = await scrape(api, "approval_decisions_total")
    assert decisions[(("decision", "expired"), ("tool", "ticket.cancel"))] == 1
    waited = await scrape(api, "approval_wait_seconds_sum")
    assert waited[call_tool] == 61 * 60
    timeline = await api.timeline(ticket_id)
    assert [e["type"] for e in timeline] == ["created", "approval_requested", "approval_expired"]
    assert (timeline[-1]["actor_type"], timeline[-1]["actor_id"]) == ("system", "approval-sweeper")
    assert await statuses(api) == ["expired"]


async def test_a_call_resent_after_its_approval_expired_is_told_so_and_can_ask_anew(
    api: Api,
) -> None:
    assert api.app is not None
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])
    await call.send()
    api.clock.advance(minutes=61)
    await api.app[APPROVALS].sweep()

    resent = await call.send()
    anew = await cancel_call(api, ticket["id"]).send()

    assert resent.status == 409
    assert resent.body["code"] == "approval_expired"
    assert anew.status == 202
    assert await statuses(api) == ["expired", "pending"]


async def test_approve_racing_the_agents_resend_runs_once_and_the_resend_learns_it(
    api: Api,
) -> None:
    for _ in range(ROUNDS):
        ticket = await api.create_ticket()
        call = cancel_call(api, ticket["id"])
        approval_id = (await call.send()).body["approval"]["id"]

        approved, resent = await asyncio.gather(decide(api, approval_id, "approve"), call.send())
        after = await call.send()

        assert approved.status == 200, approved.body
        # Before the approval: still pending; after: the replay; meanwhile: retry shortly.
        assert resent.status in (200, 202, 409), resent.body
        if resent.status == 409:
            assert resent.body["code"] == "request_in_progress"
        assert after.status == 200
        assert after.headers["Idempotent-Replayed"] == "true"
        assert (await event_types(api, ticket["id"])).count("cancelled") == 1
