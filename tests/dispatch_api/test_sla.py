"""The SLA engine: due times, the customer-hold credit, breaches recorded once, the views."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from dispatch_api.settings import ApiSettings
from dispatch_api.web import create_app
from testkit.api import WINDOW, Api, FakeClock


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _sample(api: Api, name: str, **labels: str) -> float:
    text = (await api.request("GET", "/metrics", as_="")).raw.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"{name}{labels} not exposed")


async def test_a_new_ticket_is_due_by_its_priority_targets(api: Api) -> None:
    ticket = await api.create_ticket(priority="P2")

    created = _at(ticket["created_at"])
    assert _at(ticket["sla"]["response_due_at"]) == created + timedelta(hours=4)
    assert _at(ticket["sla"]["resolution_due_at"]) == created + timedelta(hours=24)


async def test_a_customer_hold_stops_the_clock_and_a_provider_hold_does_not(
    api: Api, clock: FakeClock
) -> None:
    customer = await api.create_ticket(priority="P2")
    provider = await api.create_ticket(priority="P2")
    clock.advance(hours=1)
    await api.act(customer["id"], "hold", {"cause": "customer", "reason": "no access"})
    await api.act(provider["id"], "hold", {"cause": "provider", "reason": "parts"})
    clock.advance(hours=2)
    c = (await api.act(customer["id"], "resume")).body["ticket"]
    p = (await api.act(provider["id"], "resume")).body["ticket"]

    assert _at(c["sla"]["response_due_at"]) == _at(customer["sla"]["response_due_at"]) + timedelta(
        hours=2
    )
    assert c["sla"]["customer_hold_s"] == 7200
    assert p["sla"]["response_due_at"] == provider["sla"]["response_due_at"]
    assert p["sla"]["provider_hold_s"] == 7200


async def test_a_priority_change_recomputes_due_times_from_creation_keeping_the_credit(
    api: Api, clock: FakeClock
) -> None:
    ticket = await api.create_ticket(priority="P3")
    await api.act(ticket["id"], "hold", {"cause": "customer", "reason": "away"})
    clock.advance(minutes=30)
    await api.act(ticket["id"], "resume")

    raised = await api.request("PATCH", f"/v1/tickets/{ticket['id']}", json={"priority": "P1"})

    created = _at(ticket["created_at"])
    sla = raised.body["ticket"]["sla"]
    assert _at(sla["response_due_at"]) == created + timedelta(hours=2, minutes=30)
    assert _at(sla["resolution_due_at"]) == created + timedelta(hours=8, minutes=30)


async def test_a_breach_is_recorded_once_with_its_target_lateness_and_cause(
    api: Api, clock: FakeClock
) -> None:
    ticket = await api.create_ticket(priority="P1")
    await api.act(ticket["id"], "hold", {"cause": "provider", "reason": "van broke down"})
    clock.advance(hours=2, minutes=10)
    service = api.app_service

    first = await service.sweep_sla()
    again = await service.sweep_sla()

    assert (first, again) == (1, 0)
    [breach] = [e for e in await api.timeline(ticket["id"]) if e["type"] == "sla_breached"]
    details = breach["details"]
    assert (details["target"], details["priority"]) == ("response", "P1")
    assert details["late_by_s"] == 600
    assert details["provider_hold_s"] == 7800
    assert details["delay_cause"] == "provider"
    assert (breach["actor_type"], breach["actor_id"]) == ("system", "sla-sweeper")
    assert await _sample(api, "sla_breach_total", priority="P1") == 1


async def test_a_met_target_is_never_breached_and_a_paused_clock_does_not_breach(
    api: Api, clock: FakeClock
) -> None:
    arrived = await api.create_ticket(priority="P1")
    for action, body in (("schedule", WINDOW), ("dispatch", None), ("arrive", None)):
        await api.act(arrived["id"], action, body)
    paused = await api.create_ticket(priority="P1")
    await api.act(paused["id"], "hold", {"cause": "customer", "reason": "closed"})
    clock.advance(hours=3)

    recorded = await api.app_service.sweep_sla()

    assert recorded == 0


async def test_two_replicas_sweeping_at_once_record_each_breach_once(
    api: Api, clock: FakeClock, api_settings: ApiSettings
) -> None:
    ids = [(await api.create_ticket(priority="P1"))["id"] for _ in range(30)]
    clock.advance(hours=9)  # both targets of every ticket are past due
    other_app = create_app(api_settings, api.database_url, clock=clock)
    other = TestServer(other_app, host="127.0.0.1")
    await other.start_server()
    try:
        from dispatch_api.web._keys import SERVICE

        counts = list(
            await asyncio.gather(api.app_service.sweep_sla(), other_app[SERVICE].sweep_sla())
        )
        # A sweep skips rows the other holds; one more pass each leaves nothing behind.
        counts += await asyncio.gather(api.app_service.sweep_sla(), other_app[SERVICE].sweep_sla())
        async with (
            aiohttp.ClientSession() as http,
            http.get(other.make_url("/metrics")) as resp,
        ):
            other_text = await resp.text()
    finally:
        await other.close()

    assert sum(counts) == 60
    assert await api.count("SELECT count(*) FROM timeline_events WHERE type = 'sla_breached'") == 60
    for tid in ids[:3]:
        types = [
            e["details"].get("target")
            for e in await api.timeline(tid)
            if e["type"] == "sla_breached"
        ]
        assert sorted(types) == ["resolution", "response"]
    ours = await _sample(api, "sla_breach_total", priority="P1")
    theirs = next(
        s.value
        for f in text_string_to_metric_families(other_text)
        for s in f.samples
        if s.name == "sla_breach_total" and s.labels == {"priority": "P1"}
    )
    assert ours + theirs == 60


async def test_sla_lists_breached_and_at_risk_tickets_with_time_left(
    api: Api, clock: FakeClock
) -> None:
    late = await api.create_ticket(priority="P1")
    clock.advance(hours=1, minutes=30)
    soon = await api.create_ticket(priority="P4")  # due in 72 h: not at risk
    risky = await api.create_ticket(priority="P1")
    clock.advance(minutes=45)  # late is 15 min over; risky has 75 min left

    breached = await api.request("GET", "/v1/sla?status=breached")
    at_risk = await api.request("GET", "/v1/sla?status=at_risk")
    bad = await api.request("GET", "/v1/sla?status=whenever")

    assert [t["id"] for t in breached.body["items"]] == [late["id"]]
    assert breached.body["items"][0]["response_remaining_s"] == -15 * 60
    assert [t["id"] for t in at_risk.body["items"]] == []
    clock.advance(minutes=20)  # risky now has 55 min left: inside the 60 min window
    at_risk = await api.request("GET", "/v1/sla?status=at_risk")
    assert [t["id"] for t in at_risk.body["items"]] == [risky["id"]]
    assert at_risk.body["items"][0]["response_remaining_s"] == 55 * 60
    assert soon["id"] not in [t["id"] for t in at_risk.body["items"]]
    assert bad.status == 400
    assert await _sample(api, "tickets_sla", status="breached") == 1
    assert await _sample(api, "tickets_sla", status="at_risk") == 1


async def test_queue_rows_carry_waiting_time_due_times_and_the_last_mutation(
    api: Api, clock: FakeClock
) -> None:
    ticket = await api.create_ticket(priority="P2")
    clock.advance(minutes=40)
    await api.act(ticket["id"], "contact-attempts", {"channel": "phone", "outcome": "no_answer"})
    clock.advance(minutes=20)

    page = await api.request("GET", "/v1/tickets?state=READY_TO_SCHEDULE")

    [row] = page.body["items"]
    assert row["time_in_state_s"] == 3600
    assert row["response_remaining_s"] == 3 * 3600
    assert row["resolution_remaining_s"] == 23 * 3600
    assert row["missing_fields"] == []
    assert (row["last_event"]["type"], row["last_event"]["actor_id"]) == (
        "contact_attempt",
        "sup-1",
    )
    assert await _sample(api, "tickets_oldest_in_state_seconds", state="READY_TO_SCHEDULE") == 3600


async def test_bad_sla_targets_stop_start_up_naming_the_setting() -> None:
    import pytest

    from dispatch_api.settings import SettingsError

    for bad in ("P1=2/8", "P1=x/8,P2=4/24,P3=24/72,P4=72/168", "P1=9/8,P2=4/24,P3=24/72,P4=72/168"):
        with pytest.raises(SettingsError, match="DISPATCH_SLA_TARGETS"):
            ApiSettings(sla_targets=bad)


async def test_with_a_refresh_interval_scrapes_read_gauges_refreshed_in_the_background(
    api: Api, clock: FakeClock, api_settings: ApiSettings
) -> None:
    await api.create_ticket()
    settings = ApiSettings(db_pool_min=1, db_pool_max=2, metrics_refresh_s=3600)
    app = create_app(settings, api.database_url, clock=clock)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()  # refreshes once on start, then hourly
    try:
        await api.create_ticket()  # after the refresh: not seen until the next one
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.make_url("/metrics")) as resp,
        ):
            text = await resp.text()
    finally:
        await server.close()

    assert 'tickets_in_state{state="READY_TO_SCHEDULE"} 1.0' in text
    assert await _sample(api, "tickets_in_state", state="READY_TO_SCHEDULE") == 2
