"""The technician directory over HTTP: routes, roles, filters, refusals, queue counts."""

from __future__ import annotations

from typing import Any

import pytest

from testkit.api import WINDOW, Api, window

ANN: dict[str, Any] = {"id": "tech-ann", "name": "Ann", "skills": ["water_leak", "no_heat"]}


@pytest.fixture
def test_technicians() -> tuple[str, ...]:
    """These tests build the directory themselves: none seeded."""
    return ()


async def create(api: Api, body: dict[str, Any], as_: str = "dispatcher") -> dict[str, Any]:
    reply = await api.request("POST", "/v1/technicians", json=body, as_=as_)
    assert reply.status == 201, reply.body
    technician: dict[str, Any] = reply.body["technician"]
    return technician


async def listed(api: Api, query: str = "", as_: str = "dispatcher") -> list[str]:
    reply = await api.request("GET", f"/v1/technicians?{query}", as_=as_)
    assert reply.status == 200, reply.body
    return [t["id"] for t in reply.body["items"]]


async def technician_rows(api: Api) -> int:
    return await api.count("SELECT count(*) FROM technicians")


async def test_a_dispatcher_adds_a_technician_and_reads_it_back(api: Api) -> None:
    hours = {"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "17:00", "tz": "Europe/London"}
    made = await create(api, {**ANN, "region": "north", "hours": hours})

    reply = await api.request("GET", "/v1/technicians/tech-ann", as_="dispatcher")

    assert reply.status == 200
    assert reply.body["technician"] == made
    assert made["skills"] == ["water_leak", "no_heat"]
    assert made["active"] is True
    assert made["region"] == "north"
    assert made["hours"] == hours
    assert await listed(api) == ["tech-ann"]


async def test_a_create_replayed_with_its_key_answers_the_same_and_a_new_key_conflicts(
    api: Api,
) -> None:
    first = await api.request("POST", "/v1/technicians", json=ANN, key="k-ann")
    again = await api.request("POST", "/v1/technicians", json=ANN, key="k-ann")
    other = await api.request("POST", "/v1/technicians", json={**ANN, "name": "Bob"})

    assert (first.status, again.status) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.body == first.body
    assert other.status == 409
    assert other.content_type == "application/problem+json"
    assert other.body["code"] == "technician_exists"
    assert (await api.request("GET", "/v1/technicians/tech-ann")).body["technician"][
        "name"
    ] == "Ann"


async def test_patch_changes_the_given_fields_and_deactivation_drops_it_from_active_lists(
    api: Api,
) -> None:
    await create(api, ANN)

    reply = await api.request(
        "PATCH", "/v1/technicians/tech-ann", json={"skills": ["lockout"], "active": False}
    )

    assert reply.status == 200, reply.body
    assert reply.body["technician"]["skills"] == ["lockout"]
    assert reply.body["technician"]["name"] == "Ann"
    assert await listed(api, "active=true") == []
    assert await listed(api, "active=false&skill=lockout") == ["tech-ann"]
    missing = await api.request("PATCH", "/v1/technicians/nobody", json={"active": False})
    assert missing.status == 404
    assert missing.body["code"] == "technician_not_found"


async def test_a_technician_reads_its_own_record_only_and_changes_nothing(api: Api) -> None:
    await create(api, {"id": "tech-1", "name": "One", "skills": ["general"]})
    await create(api, {"id": "tech-2", "name": "Two", "skills": ["general"]})

    own = await api.request("GET", "/v1/technicians/tech-1", as_="technician")
    other = await api.request("GET", "/v1/technicians/tech-2", as_="technician")
    created = await api.request(
        "POST", "/v1/technicians", json={**ANN, "id": "tech-3"}, as_="technician"
    )
    patched = await api.request(
        "PATCH", "/v1/technicians/tech-1", json={"skills": ["lockout"]}, as_="technician"
    )

    assert own.status == 200
    assert own.body["technician"]["id"] == "tech-1"
    assert other.status == 404
    assert await listed(api, as_="technician") == ["tech-1"]
    assert (created.status, created.body["code"]) == (403, "forbidden")
    assert (patched.status, patched.body["code"]) == (403, "forbidden")
    assert await technician_rows(api) == 2
    assert (await api.request("GET", "/v1/technicians/tech-1")).body["technician"]["skills"] == [
        "general"
    ]


async def test_listing_filters_by_skill_and_active_and_pages_through_every_technician(
    api: Api,
) -> None:
    for i in range(5):
        await create(api, {"id": f"t{i}", "name": f"T{i}", "skills": ["general"], "active": i != 3})
    await create(api, {"id": "t9", "name": "Locks", "skills": ["lockout"]})

    pages: list[list[str]] = []
    cursor = None
    while True:
        query = "skill=general&limit=2" + (f"&cursor={cursor}" if cursor else "")
        reply = await api.request("GET", f"/v1/technicians?{query}")
        pages.append([t["id"] for t in reply.body["items"]])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10

    assert pages == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert await listed(api, "skill=general&active=true") == ["t0", "t1", "t2", "t4"]
    assert await listed(api, "skill=lockout") == ["t9"]


async def test_availability_leaves_out_technicians_holding_an_overlapping_assignment(
    api: Api,
) -> None:
    await create(api, {"id": "tech-1", "name": "One", "skills": ["water_leak"]})
    await create(api, {"id": "tech-2", "name": "Two", "skills": ["water_leak"]})
    ticket = await api.create_ticket()
    scheduled = await api.act(ticket["id"], "schedule", WINDOW)  # tech-1, 13:00-15:00
    assert scheduled.status == 200, scheduled.body

    def window(start: str, end: str) -> str:
        return f"available_from=2026-11-27T{start}:00Z&available_to=2026-11-27T{end}:00Z"

    assert await listed(api, window("14:00", "16:00")) == ["tech-2"]
    assert await listed(api, window("12:00", "13:30")) == ["tech-2"]
    # Touching windows do not overlap: [15:00, 16:00) starts as the assignment ends.
    assert await listed(api, window("15:00", "16:00")) == ["tech-1", "tech-2"]
    assert await listed(api, window("10:00", "13:00")) == ["tech-1", "tech-2"]
    cancelled = await api.act(ticket["id"], "cancel", {"reason": "customer fixed it"})
    assert cancelled.status == 200
    assert await listed(api, window("14:00", "16:00")) == ["tech-1", "tech-2"]


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({**ANN, "colour": "blue"}, "validation_failed", "/colour"),
        ({**ANN, "id": "has space"}, "validation_failed", "/id"),
        ({**ANN, "id": "x" * 129}, "validation_failed", "/id"),
        ({**ANN, "skills": ["water_leak", "juggling"]}, "unknown_incident_type", "/skills/1"),
        ({**ANN, "hours": {"days": [8], "start": "08:00", "end": "17:00"}}, None, "/hours"),
        ({**ANN, "hours": {"days": [1], "start": "25:00", "end": "17:00"}}, None, "/hours"),
        ({"id": "tech-ann", "skills": []}, "validation_failed", ""),
        ({**ANN, "name": ""}, "validation_failed", "/name"),
    ],
)
async def test_a_bad_technician_body_is_refused_422_naming_the_field_and_writes_nothing(
    api: Api, body: dict[str, Any], code: str | None, path: str
) -> None:
    reply = await api.request("POST", "/v1/technicians", json=body)

    assert reply.status == 422, reply.body
    assert reply.content_type == "application/problem+json"
    assert reply.body["code"] == (code or "validation_failed")
    assert any(e["path"].startswith(path) for e in reply.body["errors"])
    assert len(reply.raw) < 4096
    assert await technician_rows(api) == 0


async def test_a_bad_patch_is_refused_and_changes_nothing(api: Api) -> None:
    await create(api, ANN)
    before = (await api.request("GET", "/v1/technicians/tech-ann")).body

    empty = await api.request("PATCH", "/v1/technicians/tech-ann", json={})
    renamed = await api.request("PATCH", "/v1/technicians/tech-ann", json={"id": "tech-bob"})
    unknown = await api.request("PATCH", "/v1/technicians/tech-ann", json={"skills": ["x"]})
    keyless = await api.request(
        "PATCH", "/v1/technicians/tech-ann", json={"active": False}, key=None
    )
    bad_id = await api.request("PATCH", "/v1/technicians/a%20b", json={"active": False})

    assert (empty.status, empty.body["code"]) == (422, "validation_failed")
    assert (renamed.status, renamed.body["errors"][0]["path"]) == (422, "/id")
    assert (unknown.status, unknown.body["code"]) == (422, "unknown_incident_type")
    assert (keyless.status, keyless.body["code"]) == (400, "idempotency_key_missing")
    assert (bad_id.status, bad_id.body["code"]) == (400, "invalid_id")
    assert (await api.request("GET", "/v1/technicians/tech-ann")).body == before


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("active=yes", "active"),
        ("skill=juggling", "skill"),
        ("available_from=2026-11-27T10:00:00Z", "available_to"),
        ("available_from=2026-11-27T10:00:00Z&available_to=2026-11-27T09:00:00Z", "available_to"),
        ("available_from=tomorrow&available_to=2026-11-27T09:00:00Z", "available_from"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=%%%", "cursor"),
        ("skill=general&skill=lockout", "skill"),
    ],
)
async def test_a_bad_technician_query_is_refused_400_naming_the_parameter(
    api: Api, query: str, parameter: str
) -> None:
    reply = await api.request("GET", f"/v1/technicians?{query}")

    assert reply.status == 400, reply.body
    assert reply.body["code"] == "invalid_query"
    assert reply.body["parameter"] == parameter
    assert len(reply.raw) < 2048


async def test_queue_rows_ready_to_schedule_count_the_active_technicians_who_could_take_them(
    api: Api,
) -> None:
    await create(api, {"id": "t1", "name": "One", "skills": ["water_leak", "lockout"]})
    await create(api, {"id": "t2", "name": "Two", "skills": ["water_leak"]})
    await create(api, {"id": "t3", "name": "Three", "skills": ["water_leak"], "active": False})
    leak = await api.create_ticket()
    locked_out = await api.create_ticket(incident_type="lockout")
    heat = await api.create_ticket(incident_type="no_heat")
    reply = await api.request("POST", "/v1/tickets", json={"customer_name": "No address"})
    new = reply.body["ticket"]
    scheduled = await api.create_ticket()
    assert (await api.act(scheduled["id"], "schedule", window(0, "t1"))).status == 200

    reply = await api.request("GET", "/v1/tickets")

    counts = {t["id"]: t["matching_technicians"] for t in reply.body["items"]}
    assert counts == {
        leak["id"]: 2,
        locked_out["id"]: 1,
        heat["id"]: 0,
        new["id"]: None,
        scheduled["id"]: None,
    }
