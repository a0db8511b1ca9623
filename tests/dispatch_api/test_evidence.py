"""Evidence over HTTP: inline uploads and URI references, their checks, listing, download."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest

from dispatch_api.settings import ApiSettings
from testkit.api import WINDOW, Api, Reply

MAX_BYTES = 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings(evidence_max_bytes=MAX_BYTES, db_pool_min=1, db_pool_max=8)


def inline(content: bytes, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "photo",
        "tag": "before",
        "content_type": "image/png",
        "content_base64": base64.b64encode(content).decode(),
        "sha256": hashlib.sha256(content).hexdigest(),
        **fields,
    }


def by_uri(**fields: Any) -> dict[str, Any]:
    return {
        "kind": "document",
        "tag": "readings",
        "content_type": "application/pdf",
        "uri": "https://files.example/readings/42.pdf",
        "sha256": "ab" * 32,
        "size_bytes": 48213,
        **fields,
    }


async def written(api: Api) -> tuple[int, int, int]:
    return (
        await api.count("SELECT count(*) FROM evidence"),
        await api.count("SELECT count(*) FROM timeline_events"),
        await api.count("SELECT count(*) FROM idempotency_keys"),
    )


def assert_problem(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.content_type == "application/problem+json"
    body: dict[str, Any] = reply.body
    assert body["code"] == code, body
    assert body["status"] == status
    return body


async def test_an_inline_upload_is_stored_and_downloads_byte_identical(api: Api) -> None:
    ticket = await api.create_ticket()

    reply = await api.act(ticket["id"], "evidence", inline(PNG, description="kitchen floor"))

    assert reply.status == 201, reply.body
    item = reply.body["ticket"]["evidence"][0]
    assert reply.body["evidence"] == item
    assert reply.body["event"]["details"]["evidence_id"] == item["id"]
    assert item["size_bytes"] == len(PNG)
    assert item["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert (item["kind"], item["tag"], item["content_type"]) == ("photo", "before", "image/png")
    assert item["uri"] is None
    assert item["description"] == "kitchen floor"
    assert item["content_url"] == (f"/v1/tickets/{ticket['id']}/evidence/{item['id']}/content")
    event = reply.body["event"]
    assert event["type"] == "evidence_attached"
    assert event["details"]["evidence_id"] == item["id"]
    assert event["details"]["sha256"] == item["sha256"]

    download = await api.request("GET", item["content_url"])

    assert download.status == 200
    assert download.raw == PNG
    assert download.content_type == "image/png"
    assert download.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_sha256_is_optional_for_inline_content_and_then_computed(api: Api) -> None:
    ticket = await api.create_ticket()
    body = inline(b"plain words", content_type="text/plain", kind="note")
    del body["sha256"], body["tag"]

    reply = await api.act(ticket["id"], "evidence", body)

    assert reply.status == 201, reply.body
    item = reply.body["ticket"]["evidence"][0]
    assert item["sha256"] == hashlib.sha256(b"plain words").hexdigest()
    assert item["tag"] is None
    download = await api.request("GET", item["content_url"])
    assert download.raw == b"plain words"
    assert download.content_type == "text/plain"


async def test_a_sha256_that_does_not_match_the_content_is_422_and_stores_nothing(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    reply = await api.act(ticket["id"], "evidence", inline(PNG, sha256="0" * 64))

    body = assert_problem(reply, 422, "sha256_mismatch")
    assert body["expected"] == "0" * 64
    assert body["actual"] == hashlib.sha256(PNG).hexdigest()
    assert await written(api) == before


async def test_a_size_that_does_not_match_the_inline_content_is_422(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    reply = await api.act(ticket["id"], "evidence", inline(PNG, size_bytes=len(PNG) + 1))

    body = assert_problem(reply, 422, "validation_failed")
    assert [e["path"] for e in body["errors"]] == ["/size_bytes"]
    assert await written(api) == before


async def test_a_content_type_outside_the_allow_list_is_422(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for content_type in ("application/x-msdownload", "text/html"):
        reply = await api.act(ticket["id"], "evidence", inline(PNG, content_type=content_type))
        body = assert_problem(reply, 422, "evidence_content_type_not_allowed")
        assert "image/png" in body["allowed_values"]
        assert content_type not in body["allowed_values"]

    assert await written(api) == before


async def test_content_over_evidence_max_bytes_is_413_and_the_limit_itself_is_fine(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    reply = await api.act(ticket["id"], "evidence", inline(b"x" * (MAX_BYTES + 1)))

    body = assert_problem(reply, 413, "evidence_too_large")
    assert body["limit_bytes"] == MAX_BYTES
    assert await written(api) == before

    at_limit = await api.act(ticket["id"], "evidence", inline(b"x" * MAX_BYTES))
    assert at_limit.status == 201, at_limit.body
    assert at_limit.body["ticket"]["evidence"][0]["size_bytes"] == MAX_BYTES


async def test_a_body_far_over_the_upload_bound_is_413_payload_too_large(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    reply = await api.act(ticket["id"], "evidence", inline(b"x" * 100_000))

    assert_problem(reply, 413, "payload_too_large")
    assert await written(api) == before


async def test_content_that_is_not_base64_is_422(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for bad in ("not base64!", "aGVsbG8", "aGVs\nbG8="):
        body = {**inline(PNG), "content_base64": bad}
        del body["sha256"]
        reply = await api.act(ticket["id"], "evidence", body)
        problem = assert_problem(reply, 422, "validation_failed")
        assert [e["path"] for e in problem["errors"]] == ["/content_base64"], bad

    assert await written(api) == before


async def test_exactly_one_of_uri_and_inline_content_is_required(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)
    both = {**by_uri(), "content_base64": base64.b64encode(PNG).decode()}
    neither = {"kind": "photo", "content_type": "image/png"}

    for body in (both, neither):
        reply = await api.act(ticket["id"], "evidence", body)
        problem = assert_problem(reply, 422, "validation_failed")
        assert "exactly one of uri or content_base64" in problem["errors"][0]["message"]

    assert await written(api) == before


async def test_uri_evidence_needs_sha256_and_size_bytes(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for missing in ("sha256", "size_bytes"):
        body = by_uri()
        del body[missing]
        reply = await api.act(ticket["id"], "evidence", body)
        problem = assert_problem(reply, 422, "validation_failed")
        assert "needs sha256 and size_bytes" in problem["errors"][0]["message"]

    assert await written(api) == before


async def test_uri_evidence_is_listed_with_its_uri_and_has_no_content_here(api: Api) -> None:
    ticket = await api.create_ticket(incident_type="no_heat")

    reply = await api.act(ticket["id"], "evidence", by_uri())

    assert reply.status == 201, reply.body
    listing = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence")
    assert listing.status == 200
    assert listing.body["ticket_id"] == ticket["id"]
    [item] = listing.body["items"]
    assert item["uri"] == "https://files.example/readings/42.pdf"
    assert (item["sha256"], item["size_bytes"]) == ("ab" * 32, 48213)
    assert item["content_url"] is None

    content = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/{item['id']}/content")

    body = assert_problem(content, 404, "evidence_content_external")
    assert body["evidence_id"] == item["id"]


async def test_a_size_beyond_bigint_is_422_not_a_server_error(api: Api) -> None:
    ticket = await api.create_ticket()
    before = await written(api)

    for size in (2**63, 2**64 - 1, 2**64):
        reply = await api.act(ticket["id"], "evidence", by_uri(size_bytes=size))
        problem = assert_problem(reply, 422, "validation_failed")
        assert [e["path"] for e in problem["errors"]] == ["/size_bytes"], size

    assert await written(api) == before


async def test_an_integral_float_size_is_stored_and_answered_as_an_integer(api: Api) -> None:
    ticket = await api.create_ticket()

    reply = await api.act(ticket["id"], "evidence", by_uri(size_bytes=5.0))

    assert reply.status == 201, reply.body
    # the new evidence, the ticket's evidence list and the event details
    assert reply.raw.count(b'"size_bytes":5,') == 3
    listing = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence")
    assert listing.raw.count(b'"size_bytes":5,') == 1


async def test_evidence_on_a_closed_ticket_is_409_invalid_transition(api: Api) -> None:
    cancelled = await api.create_ticket()
    assert (await api.act(cancelled["id"], "cancel", {"reason": "duplicate"})).status == 200
    completed = await api.create_ticket(incident_type="general")
    tid = completed["id"]
    assert (await api.act(tid, "schedule", WINDOW)).status == 200
    assert (await api.act(tid, "dispatch")).status == 200
    assert (await api.act(tid, "arrive")).status == 200
    note = inline(b"replaced the washer", kind="note", content_type="text/plain")
    assert (await api.act(tid, "evidence", note)).status == 201
    assert (await api.act(tid, "complete")).body["ticket"]["state"] == "COMPLETED"
    evidence_before = await api.count("SELECT count(*) FROM evidence")

    for ticket_id, state in ((cancelled["id"], "CANCELLED"), (tid, "COMPLETED")):
        reply = await api.act(ticket_id, "evidence", inline(PNG))
        body = assert_problem(reply, 409, "invalid_transition")
        assert "attach_evidence" not in body["allowed_actions"]
        event = (await api.timeline(ticket_id))[-1]
        assert event["type"] == "action_rejected"
        assert event["details"]["action"] == "attach_evidence"
        assert event["from_state"] == event["to_state"] == state

    assert await api.count("SELECT count(*) FROM evidence") == evidence_before


async def test_evidence_is_listed_and_read_one_by_one(api: Api) -> None:
    ticket = await api.create_ticket()
    first = await api.act(ticket["id"], "evidence", inline(PNG))
    api.clock.advance(minutes=5)
    second = await api.act(ticket["id"], "evidence", by_uri())
    ids = [
        first.body["ticket"]["evidence"][0]["id"],
        second.body["ticket"]["evidence"][1]["id"],
    ]

    listing = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence")

    assert listing.status == 200
    assert [i["id"] for i in listing.body["items"]] == ids
    for item in listing.body["items"]:
        one = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/{item['id']}")
        assert one.status == 200
        assert one.body == item
    assert listing.body["items"][1]["captured_at"] == "2026-11-27T09:05:00+00:00"
    ticket_view = await api.request("GET", f"/v1/tickets/{ticket['id']}")
    assert ticket_view.body["evidence"] == listing.body["items"]

    unknown = uuid.uuid4()
    missing = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/{unknown}")
    assert_problem(missing, 404, "evidence_not_found")
    no_content = await api.request("GET", f"/v1/tickets/{ticket['id']}/evidence/{unknown}/content")
    assert_problem(no_content, 404, "evidence_not_found")


async def test_evidence_records_who_captured_it_and_under_which_request(api: Api) -> None:
    ticket = await api.create_ticket()
    assert (await api.act(ticket["id"], "schedule", WINDOW)).status == 200

    by_technician = await api.act(
        ticket["id"], "evidence", inline(PNG), as_="technician", key="upload-1"
    )
    by_agent = await api.act(
        ticket["id"],
        "evidence",
        inline(b"signed", kind="signature", tag="customer"),
        as_="gateway",
        headers={
            "X-Actor-Type": "agent",
            "X-Actor-Id": "field-assistant",
            "X-Actor-Role": "dispatcher",
            "X-Tool-Name": "attach_evidence",
            "X-Request-ID": "req-77",
        },
    )

    assert by_technician.status == 201, by_technician.body
    assert by_agent.status == 201, by_agent.body
    first, second = by_agent.body["ticket"]["evidence"]
    assert first["captured_by"] == {
        "actor_type": "human",
        "actor_id": "tech-1",
        "role": "technician",
    }
    assert first["request_id"] == by_technician.headers["X-Request-ID"]  # minted: a human
    assert second["captured_by"] == {
        "actor_type": "agent",
        "actor_id": "field-assistant",
        "role": "dispatcher",
    }
    assert second["request_id"] == "req-77"
    assert first["captured_at"] == "2026-11-27T09:00:00+00:00"
    event = (await api.timeline(ticket["id"]))[-1]
    assert (event["actor_type"], event["actor_id"], event["tool_name"]) == (
        "agent",
        "field-assistant",
        "attach_evidence",
    )


async def test_a_technician_cannot_attach_evidence_to_a_ticket_not_assigned_to_them(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    assert (await api.act(ticket["id"], "schedule", WINDOW)).status == 200
    before = await written(api)

    reply = await api.act(ticket["id"], "evidence", inline(PNG), as_="other_technician")

    assert_problem(reply, 404, "ticket_not_found")
    assert await written(api) == before
