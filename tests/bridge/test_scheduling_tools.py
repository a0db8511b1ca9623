"""ticket.schedule through the bridge, as an agent meets it: a window in 2020 or a technician
that exists nowhere is refused with a closed code, what to try next and `outcome: none`; ticket
answers name the tools to call next."""

from __future__ import annotations

import uuid

from testkit.api import WINDOW

from .conftest import Bridge

NOT_BOOKED = "SELECT count(*) FROM tickets WHERE id = $1 AND state = 'READY_TO_SCHEDULE'"


async def test_a_window_in_2020_is_refused_as_invalid_arguments_and_nothing_changes(
    bridge: Bridge,
) -> None:
    ticket = await bridge.api.create_ticket()
    old = {**WINDOW, "window_start": "2020-01-07T13:00:00Z", "window_end": "2020-01-07T15:00:00Z"}
    reply = await bridge.invoke("ticket.schedule", {"ticket_id": ticket["id"], **old})

    assert reply.status == 422, reply.body
    error = reply.body["error"]
    assert (reply.body["ok"], error["code"], error["retryable"]) == (
        False,
        "invalid_arguments",
        False,
    )
    assert error["details"]["upstream_code"] == "invalid_window"
    assert error["details"]["outcome"] == "none"
    assert "window_start is in the past" in error["message"]
    assert await bridge.api.count(NOT_BOOKED, uuid.UUID(ticket["id"])) == 1


async def test_an_unknown_technician_is_not_found_with_the_technicians_who_could_go(
    bridge: Bridge,
) -> None:
    ticket = await bridge.api.create_ticket()
    arguments = {"ticket_id": ticket["id"], **WINDOW, "technician_id": "tech-nobody"}
    reply = await bridge.invoke("ticket.schedule", arguments)

    assert reply.status == 404, reply.body
    error = reply.body["error"]
    assert (error["code"], error["details"]["upstream_code"]) == (
        "not_found",
        "technician_not_found",
    )
    assert error["details"]["candidates"] == ["tech-1", "tech-2"]
    assert "tech-1, tech-2" in error["message"]
    assert error["details"]["outcome"] == "none"
    assert await bridge.api.count(NOT_BOOKED, uuid.UUID(ticket["id"])) == 1


async def test_a_double_booking_is_refused_with_the_clash_and_the_earliest_free_window(
    bridge: Bridge,
) -> None:
    first, second = await bridge.api.create_ticket(), await bridge.api.create_ticket()
    booked = await bridge.invoke("ticket.schedule", {"ticket_id": first["id"], **WINDOW})
    assert booked.body["ok"] is True, booked.body
    reply = await bridge.invoke("ticket.schedule", {"ticket_id": second["id"], **WINDOW})

    error = reply.body["error"]
    assert (reply.status, error["code"]) == (409, "invalid_transition"), reply.body
    assert error["details"]["upstream_code"] == "schedule_conflict"
    assert error["details"]["conflict"]["ticket_id"] == first["id"]
    assert error["details"]["earliest_free_window"]["window_start"] == "2026-11-27T15:00:00+00:00"
    assert error["details"]["outcome"] == "none"


async def test_ticket_get_lists_the_tools_to_call_next_beside_the_actions(bridge: Bridge) -> None:
    ticket = await bridge.api.create_ticket()
    reply = await bridge.invoke("ticket.get", {"ticket_id": ticket["id"]})

    result = reply.body["result"]
    view = result.get("ticket", result)
    assert "schedule" in view["allowed_actions"]
    assert len(view["allowed_tools"]) == len(view["allowed_actions"])
    assert view["allowed_tools"][view["allowed_actions"].index("schedule")] == "ticket.schedule"
