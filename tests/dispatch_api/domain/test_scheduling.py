"""Scheduling rules, pure: window validity, technician known/active/skilled, no overlap, and
the details an agent acts on. Expected values are written out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatch_api.domain import (
    ACTION_TOOLS,
    Availability,
    Booking,
    Priority,
    Rejected,
    Schedule,
    State,
    Technician,
    Ticket,
    WindowPolicy,
    allowed_tools,
    earliest_free,
    review,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
POLICY = WindowPolicy(grace=timedelta(minutes=5), max_window=timedelta(hours=12))
TICKET = Ticket(
    id="00000000-0000-0000-0000-000000000001",
    state=State.READY_TO_SCHEDULE,
    priority=Priority.P2,
    incident_type="water_leak",
)
PLUMBER = Technician("tech-1", "Ada", ("water_leak", "no_heat"))


def at(hour: float) -> datetime:
    return NOW.replace(hour=0) + timedelta(hours=hour)


def schedule(start: float, end: float, technician_id: str = "tech-1") -> Schedule:
    return Schedule(technician_id, at(start), at(end))


def refused(decision: Rejected | None) -> Rejected:
    assert isinstance(decision, Rejected), decision
    return decision


def test_a_window_for_a_known_active_skilled_free_technician_is_not_refused() -> None:
    busy = [Booking("other", at(9), at(13))]
    assert review(TICKET, schedule(13, 15), Availability(PLUMBER, busy), NOW, POLICY) is None


def test_a_window_ending_before_it_starts_is_refused_as_invalid_window() -> None:
    r = refused(review(TICKET, schedule(15, 13), Availability(PLUMBER), NOW, POLICY))
    assert (r.code, r.event_type) == ("invalid_window", "action_rejected")
    assert r.details["invalid_fields"] == [
        {"field": "/window_end", "message": "must be after window_start"}
    ]


def test_a_window_starting_in_the_past_beyond_the_grace_is_refused_with_the_earliest_start() -> (
    None
):
    r = refused(review(TICKET, schedule(8.9, 10), Availability(PLUMBER), NOW, POLICY))
    assert r.code == "invalid_window"
    assert r.details["invalid_fields"][0]["field"] == "/window_start"
    assert r.details["not_before"] == "2026-11-27T08:55:00+00:00"


def test_a_window_starting_within_the_grace_is_accepted() -> None:
    assert review(TICKET, schedule(8.95, 10), Availability(PLUMBER), NOW, POLICY) is None


def test_a_window_longer_than_the_maximum_is_refused() -> None:
    r = refused(review(TICKET, schedule(10, 22.5), Availability(PLUMBER), NOW, POLICY))
    assert r.code == "invalid_window"
    assert r.details["invalid_fields"][0]["field"] == "/window_end"
    assert r.details["max_window_hours"] == 12


def test_an_unknown_technician_is_refused_with_the_candidates() -> None:
    found = Availability(None, (), ("tech-2", "tech-3"))
    r = refused(review(TICKET, schedule(13, 15, "tech-404"), found, NOW, POLICY))
    assert r.code == "technician_not_found"
    assert r.details["technician_id"] == "tech-404"
    assert r.details["candidates"] == ["tech-2", "tech-3"]


def test_an_inactive_technician_is_refused() -> None:
    retired = Technician("tech-1", "Ada", ("water_leak",), active=False)
    r = refused(review(TICKET, schedule(13, 15), Availability(retired), NOW, POLICY))
    assert (r.code, r.details["technician_id"]) == ("technician_inactive", "tech-1")


def test_a_technician_without_the_incident_skill_is_refused_naming_the_skill() -> None:
    locksmith = Technician("tech-1", "Ada", ("lockout",))
    found = Availability(locksmith, (), ("tech-2",))
    r = refused(review(TICKET, schedule(13, 15), found, NOW, POLICY))
    assert r.code == "technician_lacks_skill"
    assert r.details["required_skill"] == "water_leak"
    assert r.details["technician_skills"] == ["lockout"]
    assert r.details["candidates"] == ["tech-2"]


def test_an_overlap_is_refused_with_the_conflict_candidates_and_earliest_free_window() -> None:
    busy = [Booking("t-a", at(12), at(14)), Booking("t-b", at(14), at(16))]
    found = Availability(PLUMBER, busy, ("tech-2",))
    r = refused(review(TICKET, schedule(13, 15), found, NOW, POLICY))
    assert r.code == "schedule_conflict"
    assert r.details["conflict"] == {
        "ticket_id": "t-a",
        "window_start": "2026-11-27T12:00:00+00:00",
        "window_end": "2026-11-27T14:00:00+00:00",
    }
    assert r.details["candidates"] == ["tech-2"]
    assert r.details["earliest_free_window"] == {
        "window_start": "2026-11-27T16:00:00+00:00",
        "window_end": "2026-11-27T18:00:00+00:00",
    }


def test_a_window_touching_another_at_its_end_does_not_overlap() -> None:
    busy = [Booking("t-a", at(11), at(13)), Booking("t-b", at(15), at(17))]
    assert review(TICKET, schedule(13, 15), Availability(PLUMBER, busy), NOW, POLICY) is None


def test_rescheduling_a_ticket_over_its_own_window_is_not_a_conflict() -> None:
    own = [Booking(TICKET.id, at(13), at(15))]
    assert review(TICKET, schedule(14, 16), Availability(PLUMBER, own), NOW, POLICY) is None


def test_the_earliest_free_window_skips_every_booking_in_its_way() -> None:
    busy = [
        Booking("c", at(16), at(17)),
        Booking("a", at(10), at(12)),
        Booking("b", at(12), at(15)),
    ]
    assert earliest_free(at(11), timedelta(hours=2), busy) == at(17)
    assert earliest_free(at(8), timedelta(hours=2), busy) == at(8)


def test_rejections_name_the_tools_an_agent_would_call() -> None:
    r = refused(review(TICKET, schedule(15, 13), Availability(PLUMBER), NOW, POLICY))
    assert r.details["allowed_actions"] == [
        "attach_evidence",
        "cancel",
        "contact_attempt",
        "escalate",
        "hold",
        "mitigate",
        "schedule",
        "update",
    ]
    assert r.details["allowed_tools"] == [
        "evidence.attach",
        "ticket.cancel",
        "customer.follow_up",
        "ticket.escalate",
        "ticket.hold",
        "mitigation.record",
        "ticket.schedule",
        "ticket.update",
    ]
    assert allowed_tools(TICKET) == r.details["allowed_tools"]


def test_every_action_names_a_tool_of_the_catalog() -> None:
    from tools import catalog

    names = {t.name for t in catalog()}
    assert set(ACTION_TOOLS.values()) <= names
