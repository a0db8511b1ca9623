"""Idempotency-Key: one effect per key, identical replays, conflicts and in-flight answers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import uuid

import orjson

from testkit.api import COMPLETE_TICKET, WINDOW, Api, Reply


async def test_the_same_create_twice_makes_one_ticket_and_replays_the_first_answer(
    api: Api,
) -> None:
    key = str(uuid.uuid4())
    first = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)
    second = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)

    assert first.status == second.status == 201
    assert second.raw == first.raw
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await api.count("SELECT count(*) FROM tickets") == 1
    assert await api.count("SELECT count(*) FROM timeline_events") == 1


async def test_twenty_concurrent_requests_with_one_key_have_exactly_one_effect(api: Api) -> None:
    ticket = await api.create_ticket()
    key = str(uuid.uuid4())
    replies = await asyncio.gather(
        *(api.act(ticket["id"], "schedule", WINDOW, key=key) for _ in range(20))
    )

    statuses = sorted(r.status for r in replies)
    assert set(statuses) <= {200, 409}, statuses
    winners = [r for r in replies if r.status == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(winners) == 1
    for reply in replies:
        if reply.status == 200:
            assert reply.raw == winners[0].raw
        else:
            assert reply.body["code"] == "request_in_progress"
            assert reply.headers["Retry-After"] == "1"
    events = await api.timeline(ticket["id"])
    assert [e["type"] for e in events] == ["created", "scheduled"]


async def test_a_request_answered_409_in_flight_replays_once_retried(api: Api) -> None:
    ticket = await api.create_ticket()
    key = str(uuid.uuid4())
    await asyncio.gather(*(api.act(ticket["id"], "schedule", WINDOW, key=key) for _ in range(5)))

    retried = await api.act(ticket["id"], "schedule", WINDOW, key=key)

    assert retried.status == 200
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert await api.count("SELECT count(*) FROM timeline_events") == 2


async def test_reusing_a_key_with_another_body_is_refused_and_changes_nothing(api: Api) -> None:
    key = str(uuid.uuid4())
    await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)
    other = {**COMPLETE_TICKET, "customer_name": "Someone Else"}

    reply = await api.request("POST", "/v1/tickets", json=other, key=key)

    assert reply.status == 422
    assert reply.body["code"] == "idempotency_conflict"
    assert reply.content_type == "application/problem+json"
    assert await api.count("SELECT count(*) FROM tickets") == 1


async def test_a_large_upload_replays_under_its_key_and_a_changed_one_is_a_conflict(
    api: Api,
) -> None:
    """Bodies this large are fingerprinted, and their content hashed, off the event loop
    (web/_digest.py): the same key must still tell a re-send from a different upload."""
    ticket = await api.create_ticket()
    content = os.urandom(2 * 1024 * 1024)
    body = {
        "kind": "photo",
        "content_type": "image/jpeg",
        "content_base64": base64.b64encode(content).decode(),
    }
    key = str(uuid.uuid4())
    changed = bytes([content[0] ^ 1]) + content[1:]
    other = {**body, "content_base64": base64.b64encode(changed).decode()}

    async def send(fields: dict[str, str]) -> Reply:
        return await api.request(
            "POST",
            f"/v1/tickets/{ticket['id']}/evidence",
            data=io.BytesIO(orjson.dumps(fields)),
            headers={"Content-Type": "application/json"},
            key=key,
        )

    first, again, conflict = await send(body), await send(body), await send(other)

    assert first.status == 201, first.body
    assert first.body["evidence"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert first.body["evidence"]["size_bytes"] == len(content)
    assert again.raw == first.raw
    assert again.headers["Idempotent-Replayed"] == "true"
    assert conflict.status == 422
    assert conflict.body["code"] == "idempotency_conflict"
    assert await api.count("SELECT count(*) FROM evidence") == 1


async def test_reusing_a_key_on_another_route_is_a_conflict(api: Api) -> None:
    ticket = await api.create_ticket()
    key = str(uuid.uuid4())
    await api.act(ticket["id"], "hold", {"cause": "customer", "reason": "away"}, key=key)

    reply = await api.act(ticket["id"], "cancel", {"reason": "away"}, key=key)

    assert reply.status == 422
    assert reply.body["code"] == "idempotency_conflict"
    assert await api.count("SELECT count(*) FROM timeline_events") == 2


async def test_keys_are_scoped_to_the_calling_principal(api: Api) -> None:
    key = str(uuid.uuid4())
    a = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)
    b = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key, as_="dispatcher")

    assert a.status == b.status == 201
    assert "Idempotent-Replayed" not in b.headers
    assert a.body["ticket"]["id"] != b.body["ticket"]["id"]
    assert await api.count("SELECT count(*) FROM tickets") == 2


async def test_a_rejected_action_is_replayed_without_a_second_timeline_event(api: Api) -> None:
    ticket = await api.create_ticket()
    key = str(uuid.uuid4())
    first = await api.act(ticket["id"], "arrive", key=key)
    second = await api.act(ticket["id"], "arrive", key=key)

    assert first.status == second.status == 409
    assert first.body["code"] == "invalid_transition"
    assert second.raw == first.raw
    assert second.headers["Idempotent-Replayed"] == "true"
    types = [e["type"] for e in await api.timeline(ticket["id"])]
    assert types == ["created", "action_rejected"]


async def test_a_request_refused_before_any_effect_stores_no_key(api: Api) -> None:
    key = str(uuid.uuid4())
    missing = f"/v1/tickets/{uuid.uuid4()}/arrive"
    refused = await api.request("POST", missing, key=key)
    assert refused.status == 404

    assert await api.count("SELECT count(*) FROM idempotency_keys") == 0
    ticket = await api.create_ticket()
    reused = await api.request("POST", f"/v1/tickets/{ticket['id']}/cancel", json={"reason": "x"})
    assert reused.status == 200


async def test_mutations_without_a_key_are_refused_with_400(api: Api) -> None:
    reply = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=None)

    assert reply.status == 400
    assert reply.body["code"] == "idempotency_key_missing"
    assert await api.count("SELECT count(*) FROM tickets") == 0


async def test_a_quoted_structured_field_key_names_the_same_key_as_the_bare_token(
    api: Api,
) -> None:
    key = str(uuid.uuid4())
    bare = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=key)
    quoted = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, key=f'"{key}"')

    assert quoted.headers["Idempotent-Replayed"] == "true"
    assert quoted.raw == bare.raw
    assert await api.count("SELECT count(*) FROM tickets") == 1


async def test_reads_ignore_an_idempotency_key_header(api: Api) -> None:
    reply = await api.request("GET", "/v1/tickets", headers={"Idempotency-Key": "not valid\t"})

    assert reply.status == 200
