"""Evidence per ticket is bounded: a configurable limit on attaches, ticket views that embed
only the newest items with counts of all, and every item paged at its own route."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from dispatch_api.settings import ApiSettings, SettingsError, load_api_settings
from testkit.api import WINDOW, Api, Reply

LIMIT = 3


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings(
        db_pool_min=1, db_pool_max=8, db_lock_timeout_ms=5000, max_evidence_per_ticket=LIMIT
    )


def by_uri(n: int = 0, kind: str = "document", tag: str = "readings") -> dict[str, Any]:
    return {
        "kind": kind,
        "tag": tag,
        "content_type": "application/pdf",
        "uri": f"https://files.example/readings/{n}.pdf",
        "sha256": "ab" * 32,
        "size_bytes": 48213,
    }


async def written(api: Api, ticket_id: str) -> tuple[int, int]:
    return (
        await api.count("SELECT count(*) FROM evidence WHERE ticket_id = $1", uuid.UUID(ticket_id)),
        await api.count(
            "SELECT count(*) FROM timeline_events WHERE ticket_id = $1", uuid.UUID(ticket_id)
        ),
    )


async def on_site(api: Api) -> str:
    ticket = await api.create_ticket()
    for action, body in (("schedule", WINDOW), ("dispatch", {}), ("arrive", {})):
        reply = await api.act(ticket["id"], action, body)
        assert reply.status == 200, reply.body
    return str(ticket["id"])


def assert_limit_reached(reply: Reply, count: int) -> None:
    assert reply.status == 409, (reply.status, reply.body)
    assert reply.content_type == "application/problem+json"
    assert reply.body["code"] == "evidence_limit_reached"
    assert (reply.body["limit"], reply.body["count"]) == (LIMIT, count)
    assert "nothing was attached" in reply.body["detail"]


# --- the limit -----------------------------------------------------------------------------


async def test_an_attach_beyond_the_limit_is_409_evidence_limit_reached_and_attaches_nothing(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    for n in range(LIMIT):
        assert (await api.act(ticket["id"], "evidence", by_uri(n))).status == 201
    items_before, events_before = await written(api, ticket["id"])

    refused = await api.act(ticket["id"], "evidence", by_uri(99), key="one-too-many")
    replayed = await api.act(ticket["id"], "evidence", by_uri(99), key="one-too-many")

    assert_limit_reached(refused, LIMIT)
    assert (replayed.status, replayed.body) == (409, refused.body)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    # No item; the rejection is on the timeline once, like every rejected action.
    assert await written(api, ticket["id"]) == (items_before, events_before + 1)
    last = (await api.timeline(ticket["id"]))[-1]
    assert last["type"] == "action_rejected"
    assert last["details"]["code"] == "evidence_limit_reached"
    assert (last["details"]["limit"], last["details"]["count"]) == (LIMIT, LIMIT)


async def test_concurrent_attaches_at_the_limit_accept_exactly_one(api: Api) -> None:
    ticket = await api.create_ticket()
    for n in range(LIMIT - 1):
        assert (await api.act(ticket["id"], "evidence", by_uri(n))).status == 201

    replies = await asyncio.gather(
        *(api.act(ticket["id"], "evidence", by_uri(100 + n)) for n in range(20))
    )

    statuses = sorted(r.status for r in replies)
    assert statuses == [201] + [409] * 19, [r.body for r in replies if r.status != 201]
    for reply in replies:
        if reply.status == 409:
            assert_limit_reached(reply, LIMIT)
    assert (await written(api, ticket["id"]))[0] == LIMIT


async def test_items_already_over_the_limit_stay_readable_and_block_only_new_attaches(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    await api.insert_evidence(ticket["id"], LIMIT + 2)  # attached before the limit existed

    refused = await api.act(ticket["id"], "evidence", by_uri())
    listed = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence")

    assert_limit_reached(refused, LIMIT + 2)
    assert listed.body["total"] == LIMIT + 2
    assert len(listed.body["items"]) == LIMIT + 2


def test_the_limit_is_read_from_the_environment_and_toml_and_must_be_positive(
    tmp_path: Path,
) -> None:
    config = tmp_path / "api.toml"
    config.write_text("max_evidence_per_ticket = 40\n")

    assert ApiSettings().max_evidence_per_ticket == 200
    assert load_api_settings({}, config).max_evidence_per_ticket == 40
    env = {"DISPATCH_MAX_EVIDENCE_PER_TICKET": "7"}
    assert load_api_settings(env, config).max_evidence_per_ticket == 7
    with pytest.raises(SettingsError, match="DISPATCH_MAX_EVIDENCE_PER_TICKET"):
        load_api_settings({"DISPATCH_MAX_EVIDENCE_PER_TICKET": "0"})


# --- bounded views -------------------------------------------------------------------------


async def test_a_ticket_with_a_thousand_items_answers_a_bounded_view_with_exact_counts(
    api: Api,
) -> None:
    tid = await on_site(api)
    notes = await api.insert_evidence(tid, 990, "note", "log")
    photos = await api.insert_evidence(tid, 10, "photo", "before")

    got = await api.request("GET", f"/v1/tickets/{tid}")
    note = await api.act(tid, "contact-attempts", {"channel": "phone", "outcome": "reached"})
    queue = await api.request("GET", "/v1/tickets?limit=200")

    assert got.status == 200
    assert len(got.raw) < 30_000  # ~1,000 items embedded would be ~600 kB
    ticket = got.body
    assert [e["id"] for e in ticket["evidence"]] == (notes + photos)[-20:]
    assert ticket["evidence_summary"] == {
        "total": 1000,
        "shown": 20,
        "by_kind": {"photo": 10, "signature": 0, "document": 0, "note": 990},
        "by_kind_and_tag": [
            {"kind": "note", "tag": "log", "count": 990},
            {"kind": "photo", "tag": "before", "count": 10},
        ],
        "list_url": f"/v1/tickets/{tid}/evidence",
    }
    assert note.status == 200
    assert len(note.raw) < 30_000
    assert note.body["ticket"]["evidence_summary"]["total"] == 1000
    assert note.body["ticket"]["evidence"] == ticket["evidence"]
    [row] = [t for t in queue.body["items"] if t["id"] == tid]
    assert len(queue.raw) < 30_000
    assert [e["id"] for e in row["evidence"]] == photos[-5:]
    assert row["evidence_summary"]["total"] == 1000


async def test_an_attach_answer_shows_the_new_item_among_the_newest(api: Api) -> None:
    ticket = await api.create_ticket()
    await api.insert_evidence(ticket["id"], LIMIT - 1)

    reply = await api.act(ticket["id"], "evidence", by_uri())

    assert reply.status == 201, reply.body
    view = reply.body["ticket"]
    assert view["evidence"][-1] == reply.body["evidence"]
    assert view["evidence_summary"]["total"] == LIMIT
    assert view["evidence_summary"]["by_kind"]["document"] == 1


async def test_paging_through_evidence_returns_every_item_once_in_order(api: Api) -> None:
    ticket = await api.create_ticket()
    ids = await api.insert_evidence(ticket["id"], 1000)
    path = f"/v1/tickets/{ticket['id']}/evidence"

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=150" + (f"&cursor={cursor}" if cursor else "")
        page = await api.request("GET", path + query)
        assert page.status == 200, page.body
        assert page.body["total"] == 1000
        assert len(page.body["items"]) <= 150
        seen += [item["id"] for item in page.body["items"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break

    assert seen == ids
    assert pages == 7


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "cursor=bm90LWEtY3Vyc29y"])
async def test_a_bad_evidence_page_query_is_400_invalid_query(api: Api, query: str) -> None:
    ticket = await api.create_ticket()

    reply = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence?{query}")

    assert reply.status == 400
    assert reply.body["code"] == "invalid_query"
    assert len(reply.raw) < 1000


async def test_one_evidence_item_is_read_by_id_whatever_its_position(api: Api) -> None:
    ticket = await api.create_ticket()
    oldest = (await api.insert_evidence(ticket["id"], 100))[0]

    reply = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/{oldest}")
    missing = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/{uuid.uuid4()}")

    assert reply.status == 200
    assert reply.body["id"] == oldest
    assert (missing.status, missing.body["code"]) == (404, "evidence_not_found")


async def test_completion_counts_required_items_outside_the_embedded_page(api: Api) -> None:
    tid = await on_site(api)
    await api.insert_evidence(tid, 1, "photo", "before")
    await api.insert_evidence(tid, 1, "photo", "after")
    await api.insert_evidence(tid, 1, "signature", "customer")
    await api.insert_evidence(tid, 100, "note", "log")  # pushes the three out of every view

    view = await api.request("GET", f"/v1/tickets/{tid}")
    reply = await api.act(tid, "complete", {})

    assert {e["kind"] for e in view.body["evidence"]} == {"note"}
    assert reply.status == 200, reply.body
    assert reply.body["ticket"]["state"] == "COMPLETED"


async def test_completion_still_names_what_is_missing_among_many_items(api: Api) -> None:
    tid = await on_site(api)
    await api.insert_evidence(tid, 1, "photo", "before")
    await api.insert_evidence(tid, 200, "photo", "after")

    reply = await api.act(tid, "complete", {})

    assert reply.status == 422, reply.body
    assert reply.body["code"] == "evidence_missing"
    assert [(m["kind"], m["tag"]) for m in reply.body["missing_evidence"]] == [
        ("signature", "customer")
    ]


# --- who may read them ---------------------------------------------------------------------


async def test_a_technician_pages_the_evidence_of_their_tickets_only(api: Api) -> None:
    mine = await api.create_ticket()
    theirs = await api.create_ticket()
    assert (await api.act(mine["id"], "schedule", WINDOW)).status == 200
    other_window = {**WINDOW, "technician_id": "tech-2"}
    assert (await api.act(theirs["id"], "schedule", other_window)).status == 200
    await api.insert_evidence(mine["id"], 3)
    await api.insert_evidence(theirs["id"], 3)

    own = await api.request("GET", f"/v1/tickets/{mine['id']}/evidence", as_="technician")
    other = await api.request("GET", f"/v1/tickets/{theirs['id']}/evidence", as_="technician")
    other_ticket = await api.request("GET", f"/v1/tickets/{theirs['id']}", as_="technician")
    unauthenticated = await api.request("GET", f"/v1/tickets/{mine['id']}/evidence", as_="")

    assert own.status == 200
    assert len(own.body["items"]) == 3
    # Refused exactly as the ticket itself is, and nothing of it leaks.
    assert other.status == other_ticket.status
    assert other.status in (403, 404)
    assert other.body["code"] == other_ticket.body["code"]
    assert "items" not in other.body
    assert unauthenticated.status == 401
