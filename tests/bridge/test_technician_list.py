"""technician.list over the bridge: who could take a job, by skill and free time."""

from __future__ import annotations

from typing import Any

import pytest

from testkit.api import WINDOW

from .conftest import Bridge


@pytest.fixture
def test_technicians() -> tuple[str, ...]:
    """These tests build the directory themselves: none seeded."""
    return ()


async def add(bridge: Bridge, tid: str, skills: list[str], active: bool = True) -> None:
    body = {"id": tid, "name": tid.title(), "skills": skills, "active": active}
    reply = await bridge.api.request("POST", "/v1/technicians", json=body, as_="dispatcher")
    assert reply.status == 201, reply.body


async def listed(bridge: Bridge, arguments: dict[str, Any], as_: str = "dispatcher") -> list[str]:
    reply = await bridge.invoke("technician.list", arguments, as_=as_)
    assert reply.status == 200, reply.body
    return [t["id"] for t in reply.body["result"]["items"]]


async def test_technician_list_names_the_active_skilled_technicians_free_in_the_window(
    bridge: Bridge,
) -> None:
    await add(bridge, "tech-1", ["water_leak"])
    await add(bridge, "tech-2", ["water_leak", "no_heat"])
    await add(bridge, "tech-3", ["water_leak"], active=False)
    await add(bridge, "tech-4", ["lockout"])
    ticket = await bridge.invoke(
        "ticket.create",
        {
            "customer_name": "Ada",
            "contact_phone": "+44 20 7946 0000",
            "site_address": "12 Analytical Row",
            "incident_type": "water_leak",
            "priority": "P2",
        },
    )
    tid = ticket.body["result"]["ticket"]["id"]
    scheduled = await bridge.invoke("ticket.schedule", {"ticket_id": tid, **WINDOW})
    assert scheduled.status == 200, scheduled.body  # tech-1, 13:00-15:00

    overlapping = {"window_start": "2026-11-27T14:00:00Z", "window_end": "2026-11-27T16:00:00Z"}
    later = {"window_start": "2026-11-27T15:00:00Z", "window_end": "2026-11-27T17:00:00Z"}

    assert await listed(bridge, {"skill": "water_leak"}) == ["tech-1", "tech-2"]
    assert await listed(bridge, {"skill": "water_leak", **overlapping}) == ["tech-2"]
    assert await listed(bridge, {"skill": "water_leak", **later}) == ["tech-1", "tech-2"]
    assert await listed(bridge, {"skill": None, "limit": None}, as_="supervisor") == [
        "tech-1",
        "tech-2",
        "tech-4",
    ]


async def test_a_technician_agent_may_not_list_technicians(bridge: Bridge) -> None:
    await add(bridge, "tech-1", ["water_leak"])

    reply = await bridge.invoke("technician.list", {}, as_="technician")

    assert reply.status == 403
    assert reply.body["error"]["code"] == "forbidden"
    assert reply.body["error"]["details"]["outcome"] == "none"


@pytest.mark.parametrize(
    ("arguments", "path"),
    [
        (
            {"window_start": "2026-11-27T16:00:00Z", "window_end": "2026-11-27T15:00:00Z"},
            "/window_end",
        ),
        ({"window_start": "2026-11-27T16:00:00Z", "window_end": None}, "/window_end"),
        ({"window_end": "2026-11-27T16:00:00Z"}, "/window_start"),
        ({"skill": "Water Leak"}, "/skill"),
        ({"colour": "blue"}, "/colour"),
    ],
)
async def test_bad_technician_list_arguments_are_refused_naming_the_argument(
    bridge: Bridge, arguments: dict[str, Any], path: str
) -> None:
    forwarded = bridge.proxy.requests

    reply = await bridge.invoke("technician.list", arguments, as_="dispatcher")

    assert bridge.proxy.requests == forwarded  # refused before dispatch-api was asked
    assert reply.status == 422, reply.body
    error = reply.body["error"]
    assert error["code"] == "invalid_arguments"
    assert error["details"]["outcome"] == "none"
    assert [e["path"] for e in error["details"]["errors"]] == [path]
    assert len(reply.raw) < 4096


async def test_a_skill_naming_no_incident_type_is_refused_by_the_dispatch_system(
    bridge: Bridge,
) -> None:
    reply = await bridge.invoke("technician.list", {"skill": "juggling"}, as_="dispatcher")

    assert reply.status == 422
    assert reply.body["error"]["code"] == "invalid_arguments"
    assert "water_leak" in reply.body["error"]["message"]
