"""Scheduling refuses what a dispatcher would: a bad window, an unknown, inactive or unskilled
technician, a double booking (a PostgreSQL exclusion constraint, so racing schedulers cannot
both win). Each refusal is precise, changes nothing, and is an action_rejected event."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect, migration_files
from testkit.api import WINDOW, Api, Reply, window

NOT_BOOKED = "SELECT count(*) FROM tickets WHERE id = $1 AND state = 'READY_TO_SCHEDULE'"


@pytest.fixture
def api_settings() -> ApiSettings:
    # Long enough a lock wait for the test that holds a booking open on purpose.
    return ApiSettings(db_pool_min=1, db_pool_max=8, db_lock_timeout_ms=10_000)


async def refused(api: Api, body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    """Schedule a fresh ticket with `body`; assert the refusal, that nothing changed and that
    it was recorded; the problem body."""
    ticket = await api.create_ticket()
    reply = await api.act(ticket["id"], "schedule", body)
    assert (reply.status, reply.content_type) == (status, "application/problem+json"), reply.body
    assert reply.body["code"] == code
    assert await api.count(NOT_BOOKED, uuid.UUID(ticket["id"])) == 1
    events = await api.timeline(ticket["id"])
    assert [e["type"] for e in events] == ["created", "action_rejected"]
    assert events[-1]["details"]["code"] == code
    assert reply.body["event_seq"] == 2
    problem: dict[str, Any] = reply.body
    return problem


async def test_a_window_in_2020_is_refused_as_invalid_window_naming_the_earliest_start(
    api: Api,
) -> None:
    old = {**WINDOW, "window_start": "2020-01-07T13:00:00Z", "window_end": "2020-01-07T15:00:00Z"}
    body = await refused(api, old, 422, "invalid_window")
    assert body["invalid_fields"][0]["field"] == "/window_start"
    assert body["not_before"] == "2026-11-27T08:55:00+00:00"  # FakeClock 09:00, 5 min grace


async def test_a_window_within_the_grace_is_accepted(api: Api) -> None:
    ticket = await api.create_ticket()
    body = {**WINDOW, "window_start": "2026-11-27T08:56:00Z"}
    assert (await api.act(ticket["id"], "schedule", body)).status == 200


async def test_a_window_longer_than_the_configured_maximum_is_refused(api: Api) -> None:
    long = {**WINDOW, "window_end": "2026-11-28T13:00:00Z"}
    body = await refused(api, long, 422, "invalid_window")
    assert (body["invalid_fields"][0]["field"], body["max_window_hours"]) == ("/window_end", 12)


async def test_an_unknown_technician_is_404_technician_not_found_with_candidates(
    api: Api,
) -> None:
    body = await refused(api, {**WINDOW, "technician_id": "tech-404"}, 404, "technician_not_found")
    assert body["technician_id"] == "tech-404"
    assert body["candidates"] == ["tech-1", "tech-2"]


async def test_an_inactive_technician_is_refused(api: Api) -> None:
    await api.ensure_technician("tech-gone", active=False)
    body = await refused(api, window(0, "tech-gone"), 422, "technician_inactive")
    assert body["candidates"] == ["tech-1", "tech-2"]


async def test_a_technician_without_the_incident_skill_is_refused_with_skilled_candidates(
    api: Api,
) -> None:
    await api.ensure_technician("tech-locks", skills=("lockout",))
    body = await refused(api, window(0, "tech-locks"), 422, "technician_lacks_skill")
    assert (body["required_skill"], body["technician_skills"]) == ("water_leak", ["lockout"])
    assert body["candidates"] == ["tech-1", "tech-2"]


async def test_a_double_booking_is_409_schedule_conflict_naming_the_clash_and_what_is_free(
    api: Api,
) -> None:
    first = await api.create_ticket()
    assert (await api.act(first["id"], "schedule", WINDOW)).status == 200
    overlapping = {
        **WINDOW,
        "window_start": "2026-11-27T14:00:00Z",
        "window_end": "2026-11-27T16:00:00Z",
    }
    body = await refused(api, overlapping, 409, "schedule_conflict")
    assert body["conflict"] == {
        "ticket_id": first["id"],
        "window_start": "2026-11-27T13:00:00+00:00",
        "window_end": "2026-11-27T15:00:00+00:00",
    }
    assert body["candidates"] == ["tech-2"]
    assert body["earliest_free_window"] == {
        "window_start": "2026-11-27T15:00:00+00:00",
        "window_end": "2026-11-27T17:00:00+00:00",
    }
    assert "schedule" in body["allowed_actions"]
    assert "ticket.schedule" in body["allowed_tools"]


async def test_back_to_back_windows_and_a_reschedule_over_its_own_window_are_accepted(
    api: Api,
) -> None:
    first, second = await api.create_ticket(), await api.create_ticket()
    assert (await api.act(first["id"], "schedule", window(0))).status == 200
    assert (await api.act(second["id"], "schedule", window(1))).status == 200
    later = {**WINDOW, "window_start": "2026-11-27T14:00:00Z", "window_end": "2026-11-27T15:00:00Z"}
    assert (await api.act(first["id"], "schedule", later)).status == 200


async def test_a_finished_assignment_no_longer_blocks_the_window(api: Api) -> None:
    first, second = await api.create_ticket(), await api.create_ticket()
    assert (await api.act(first["id"], "schedule", WINDOW)).status == 200
    assert (await api.act(first["id"], "cancel", {"reason": "duplicate"})).status == 200
    assert (await api.act(second["id"], "schedule", WINDOW)).status == 200


async def test_ticket_views_name_the_tools_beside_the_actions(api: Api) -> None:
    ticket = await api.create_ticket()
    reply = await api.act(ticket["id"], "schedule", WINDOW)
    view = reply.body["ticket"]
    assert view["allowed_actions"] == [
        "attach_evidence",
        "cancel",
        "contact_attempt",
        "dispatch",
        "escalate",
        "hold",
        "mitigate",
        "schedule",
        "update",
    ]
    assert view["allowed_tools"] == [
        "evidence.attach",
        "ticket.cancel",
        "customer.follow_up",
        "ticket.dispatch",
        "ticket.escalate",
        "ticket.hold",
        "mitigation.record",
        "ticket.schedule",
        "ticket.update",
    ]


@pytest.mark.parametrize("attempt", range(5))
async def test_two_schedulers_racing_for_one_technician_book_exactly_once(
    api: Api, attempt: int
) -> None:
    first, second = await api.create_ticket(), await api.create_ticket()
    overlapping = {
        **WINDOW,
        "window_start": "2026-11-27T14:00:00Z",
        "window_end": "2026-11-27T16:00:00Z",
    }
    replies: tuple[Reply, Reply] = await asyncio.gather(
        api.act(first["id"], "schedule", WINDOW, as_="dispatcher"),
        api.act(second["id"], "schedule", overlapping, as_="supervisor"),
    )
    assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
    loser = next(r for r in replies if r.status == 409)
    assert loser.body["code"] == "schedule_conflict"
    assert loser.body["conflict"]["ticket_id"] in (first["id"], second["id"])
    booked = "SELECT count(*) FROM tickets WHERE technician_id = 'tech-1' AND state = 'SCHEDULED'"
    assert await api.count(booked) == 1


async def test_a_crowd_racing_for_one_technician_gets_one_booking_and_conflicts_not_errors(
    api: Api,
) -> None:
    """Eight schedulers at once for overlapping windows: without taking the diary in turn,
    two uncommitted bookings wait on each other in the constraint's index and PostgreSQL
    fails one as a deadlock (a 500). Every loser must get the conflict an agent can use."""
    tickets = [await api.create_ticket() for _ in range(8)]
    later = {**WINDOW, "window_start": "2026-11-27T14:00:00Z", "window_end": "2026-11-27T16:00:00Z"}
    replies = await asyncio.gather(
        *(api.act(t["id"], "schedule", (WINDOW, later)[i % 2]) for i, t in enumerate(tickets))
    )
    assert sorted(r.status for r in replies) == [200] + [409] * 7, [r.body for r in replies]
    assert {r.body["code"] for r in replies if r.status == 409} == {"schedule_conflict"}
    booked = "SELECT count(*) FROM tickets WHERE technician_id = 'tech-1' AND state = 'SCHEDULED'"
    assert await api.count(booked) == 1


async def test_a_booking_committed_after_the_check_is_caught_by_the_constraint(api: Api) -> None:
    """The read-then-write gap, opened on purpose: another transaction books tech-1 and holds
    its commit while this schedule is checked; the exclusion constraint still refuses it."""
    first, second = await api.create_ticket(), await api.create_ticket()
    rival = await connect(api.database_url)
    try:
        tx = rival.transaction()
        await tx.start()
        await rival.execute(
            "UPDATE tickets SET state = 'SCHEDULED', technician_id = 'tech-1',"
            " window_start = '2026-11-27T13:00:00Z', window_end = '2026-11-27T15:00:00Z'"
            " WHERE id = $1",
            uuid.UUID(first["id"]),
        )
        call = asyncio.create_task(api.act(second["id"], "schedule", WINDOW))
        # Bounded wait until the schedule is blocked on the rival's uncommitted row.
        for _ in range(500):
            waiting = await api.count(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            if waiting or call.done():
                break
            await asyncio.sleep(0.01)
        assert waiting == 1, "the schedule never waited on the rival booking"
        await tx.commit()
        reply = await call
    finally:
        await rival.close()
    assert (reply.status, reply.body["code"]) == (409, "schedule_conflict"), reply.body
    assert reply.body["conflict"]["ticket_id"] == first["id"]
    assert await api.count(NOT_BOOKED, uuid.UUID(second["id"])) == 1
    events = await api.timeline(second["id"])
    assert [e["type"] for e in events] == ["created", "action_rejected"]


async def test_the_database_refuses_overlapping_assignments_whoever_writes_them(api: Api) -> None:
    first, second = await api.create_ticket(), await api.create_ticket()
    assert (await api.act(first["id"], "schedule", WINDOW)).status == 200
    conn = await connect(api.database_url)
    try:
        with pytest.raises(asyncpg.ExclusionViolationError):
            await conn.execute(
                "UPDATE tickets SET state = 'DISPATCHED', technician_id = 'tech-1',"
                " window_start = '2026-11-27T14:00:00Z', window_end = '2026-11-27T18:00:00Z'"
                " WHERE id = $1",
                uuid.UUID(second["id"]),
            )
    finally:
        await conn.close()


async def test_the_migration_puts_old_double_bookings_on_hold_and_keeps_the_first(
    empty_database_url: str,
) -> None:
    conn = await connect(empty_database_url)
    try:
        before = [(v, sql) for v, sql in migration_files() if v < "0005"]
        for _, sql in before:
            await conn.execute(sql)
        insert = (
            "INSERT INTO tickets (id, state, technician_id, window_start, window_end,"
            " created_at, updated_at, state_entered_at, last_seq)"
            " VALUES ($1, $2, 'tech-1', $3::text::timestamptz, $4::text::timestamptz,"
            " $5::text::timestamptz, $5::text::timestamptz, $5::text::timestamptz, 1)"
        )
        older, newer, apart = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            insert, older, "SCHEDULED", "2030-01-07T13:00Z", "2030-01-07T15:00Z", "2026-01-01"
        )
        await conn.execute(
            insert, newer, "DISPATCHED", "2030-01-07T14:00Z", "2030-01-07T16:00Z", "2026-01-02"
        )
        await conn.execute(
            insert, apart, "SCHEDULED", "2030-01-07T15:00Z", "2030-01-07T17:00Z", "2026-01-03"
        )
        await conn.execute(dict(migration_files())["0005_no_double_booking"])
        states = {r["id"]: r["state"] for r in await conn.fetch("SELECT id, state FROM tickets")}
        held = await conn.fetchrow(
            "SELECT state_before_hold, hold_cause, last_seq FROM tickets WHERE id = $1", newer
        )
        event = await conn.fetchrow("SELECT * FROM timeline_events WHERE ticket_id = $1", newer)
    finally:
        await conn.close()
    # `apart` overlaps only `newer` (now on hold) but was created after it: held too.
    assert states == {older: "SCHEDULED", newer: "ON_HOLD", apart: "ON_HOLD"}
    assert held is not None
    assert event is not None
    assert tuple(held) == ("DISPATCHED", "provider", 2)
    assert (event["seq"], event["type"], event["actor_id"]) == (2, "held", "migration-0005")


async def test_a_ticket_resumed_after_its_window_was_taken_returns_unassigned_to_be_scheduled(
    api: Api,
) -> None:
    held, taker = await api.create_ticket(), await api.create_ticket()
    assert (await api.act(held["id"], "schedule", WINDOW)).status == 200
    hold = {"cause": "customer", "reason": "customer away"}
    assert (await api.act(held["id"], "hold", hold)).status == 200
    assert (await api.act(taker["id"], "schedule", WINDOW)).status == 200

    reply = await api.act(held["id"], "resume", {})

    assert reply.status == 200, reply.body
    ticket = reply.body["ticket"]
    assert (ticket["state"], ticket["assignment"]) == ("READY_TO_SCHEDULE", None)
    released = reply.body["event"]["details"]["assignment_released"]
    assert released["technician_id"] == "tech-1"
    assert released["conflict"]["ticket_id"] == taker["id"]
    booked = "SELECT count(*) FROM tickets WHERE technician_id = 'tech-1' AND state = 'SCHEDULED'"
    assert await api.count(booked) == 1
