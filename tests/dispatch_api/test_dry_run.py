"""`?dry_run=true` answers what the mutation would do now (the real code path, rolled back)
and changes nothing: no ticket, no event, no evidence, no Idempotency-Key."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from testkit.api import WINDOW, Api, Reply

TABLES = ("tickets", "timeline_events", "idempotency_keys", "evidence")


async def counts(api: Api) -> dict[str, int]:
    return {t: await api.count(f"SELECT count(*) FROM {t}") for t in TABLES}


async def dry(api: Api, path: str, body: Any, method: str = "POST", **kw: Any) -> Reply:
    return await api.request(method, f"{path}?dry_run=true", json=body, key=None, **kw)


async def on_site(api: Api) -> str:
    tid: str = (await api.create_ticket())["id"]
    for action, body in (("schedule", WINDOW), ("dispatch", None), ("arrive", None)):
        assert (await api.act(tid, action, body)).status == 200
    return tid


async def test_a_dry_run_of_complete_names_the_missing_evidence_and_writes_nothing(
    api: Api,
) -> None:
    tid = await on_site(api)
    before = await counts(api)
    reply = await dry(api, f"/v1/tickets/{tid}/complete", {"reason": "fixed"})
    assert (reply.status, reply.content_type) == (200, "application/json"), reply.body
    assert reply.body["dry_run"] is True
    assert reply.body["accepted"] is False
    assert reply.body["transition"] is None
    assert reply.body["ticket"] is None
    assert reply.body["event_type"] == "completion_rejected"
    problem = reply.body["problem"]
    assert (problem["status"], problem["code"]) == (422, "evidence_missing")
    assert [(m["kind"], m["tag"]) for m in problem["missing_evidence"]] == [
        ("photo", "before"),
        ("photo", "after"),
        ("signature", "customer"),
    ]
    assert "event_seq" not in problem  # its event was rolled back
    assert await counts(api) == before
    assert [e["type"] for e in await api.timeline(tid)][-1] == "arrived"


async def test_a_dry_run_of_schedule_into_a_booked_window_shows_the_conflict(api: Api) -> None:
    first, second = await api.create_ticket(), await api.create_ticket()
    assert (await api.act(first["id"], "schedule", WINDOW)).status == 200
    before = await counts(api)
    reply = await dry(api, f"/v1/tickets/{second['id']}/schedule", WINDOW)
    assert reply.status == 200, reply.body
    assert (reply.body["accepted"], reply.body["event_type"]) == (False, "action_rejected")
    assert reply.body["problem"]["code"] == "schedule_conflict"
    assert reply.body["problem"]["conflict"]["ticket_id"] == first["id"]
    assert reply.body["problem"]["candidates"] == ["tech-2"]
    assert await counts(api) == before


async def test_an_accepted_dry_run_leaves_no_key_so_the_real_call_with_that_key_runs(
    api: Api,
) -> None:
    tid = (await api.create_ticket())["id"]
    before = await counts(api)
    headers = {"Idempotency-Key": "call-7"}
    reply = await dry(api, f"/v1/tickets/{tid}/schedule", WINDOW, headers=headers)
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["accepted"] is True
    assert body["problem"] is None
    assert body["transition"] == {"from": "READY_TO_SCHEDULE", "to": "SCHEDULED"}
    assert body["event_type"] == "scheduled"
    assert body["ticket"]["state"] == "SCHEDULED"
    assert body["ticket"]["assignment"]["technician_id"] == "tech-1"
    assert body["sla"]["before"] == body["sla"]["after"]  # scheduling stops no clock
    assert body["sla"]["changed"] == []
    assert body["approval"] is None
    assert await counts(api) == before

    real = await api.act(tid, "schedule", WINDOW, key="call-7")
    assert real.status == 200, real.body
    assert "Idempotent-Replayed" not in real.headers
    assert [e["type"] for e in await api.timeline(tid)] == ["created", "scheduled"]


async def test_a_dry_run_of_arrive_shows_the_response_target_met(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    for action, body in (("schedule", WINDOW), ("dispatch", None)):
        assert (await api.act(tid, action, body)).status == 200
    reply = await dry(api, f"/v1/tickets/{tid}/arrive", {})
    assert reply.status == 200, reply.body
    assert reply.body["transition"] == {"from": "DISPATCHED", "to": "ON_SITE"}
    assert reply.body["sla"]["changed"] == ["responded_at"]
    assert reply.body["sla"]["before"]["responded_at"] is None
    assert reply.body["sla"]["after"]["responded_at"] == "2026-11-27T09:00:00+00:00"
    got = await api.request("GET", f"/v1/tickets/{tid}")
    assert (got.body["state"], got.body["sla"]["responded_at"]) == ("DISPATCHED", None)


async def test_dry_runs_of_create_update_and_evidence_write_nothing(api: Api) -> None:
    tid = await on_site(api)
    before = await counts(api)
    created = await dry(api, "/v1/tickets", {"customer_name": "Grace"})
    assert created.status == 200, created.body
    assert created.body["transition"] == {"from": None, "to": "NEW"}
    assert created.body["ticket"]["missing_fields"]
    updated = await dry(api, f"/v1/tickets/{tid}", {"priority": "P1"}, method="PATCH")
    assert updated.status == 200, updated.body
    assert updated.body["ticket"]["priority"] == "P1"
    content = b"before photo"
    attach = {
        "kind": "photo",
        "tag": "before",
        "content_type": "image/png",
        "content_base64": base64.b64encode(content).decode(),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    attached = await dry(api, f"/v1/tickets/{tid}/evidence", attach)
    assert attached.status == 200, attached.body
    assert attached.body["event_type"] == "evidence_attached"
    assert attached.body["evidence"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert attached.body["ticket"]["evidence_summary"]["total"] == 1
    assert await counts(api) == before
    got = await api.request("GET", f"/v1/tickets/{tid}")
    assert (got.body["priority"], got.body["evidence_summary"]["total"]) == ("P2", 0)


async def test_a_dry_run_is_authorized_like_the_real_call(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    before = await counts(api)
    reply = await dry(api, f"/v1/tickets/{tid}/cancel", {"reason": "x"}, as_="technician")
    assert (reply.status, reply.body["code"]) == (403, "forbidden")
    allowed = await dry(api, f"/v1/tickets/{tid}/hold", {"cause": "customer", "reason": "x"})
    assert allowed.status == 200  # a supervisor may; the technician above may not
    missing = await dry(api, "/v1/tickets/00000000-0000-4000-8000-000000000000/arrive", {})
    assert (missing.status, missing.body["code"]) == (404, "ticket_not_found")
    assert await counts(api) == before


async def test_dry_run_other_than_true_or_false_is_400_invalid_query(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    before = await counts(api)
    for query in ("dry_run=maybe", "dry_run=1", "dry_run=", "dry_run=true&dry_run=true"):
        reply = await api.request(
            "POST", f"/v1/tickets/{tid}/cancel?{query}", json={"reason": "x"}, key=None
        )
        assert (reply.status, reply.content_type) == (400, "application/problem+json")
        assert (reply.body["code"], reply.body["parameter"]) == ("invalid_query", "dry_run")
        assert len(reply.raw) < 1000
    assert await counts(api) == before


async def test_dry_run_false_is_a_real_call_that_needs_its_key(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    path = f"/v1/tickets/{tid}/escalations?dry_run=false"
    body = {"reason": "slow", "level": "supervisor"}
    missing = await api.request("POST", path, json=body, key=None)
    assert (missing.status, missing.body["code"]) == (400, "idempotency_key_missing")
    assert (await api.request("POST", path, json=body)).status == 200


async def test_a_route_without_a_dry_run_refuses_one_rather_than_write(api: Api) -> None:
    before = await counts(api)
    body = {"id": "tech-9", "name": "Nine", "skills": ["general"]}
    reply = await dry(api, "/v1/technicians", body)
    assert (reply.status, reply.body["code"]) == (400, "invalid_query")
    assert await api.count("SELECT count(*) FROM technicians WHERE id = 'tech-9'") == 0
    assert await counts(api) == before


async def test_a_dry_run_with_a_malformed_idempotency_key_is_400_invalid_header(api: Api) -> None:
    tid = (await api.create_ticket())["id"]
    reply = await dry(
        api, f"/v1/tickets/{tid}/cancel", {"reason": "x"}, headers={"Idempotency-Key": "a b"}
    )
    assert (reply.status, reply.body["code"]) == (400, "invalid_header")


async def test_an_agents_dry_run_says_the_shipped_policy_would_hold_it_and_asks_nobody(
    api: Api,
) -> None:
    """An agent's dry run through the gateway names the approval the real call would wait
    for (the shipped `cancel` rule) and creates none; a person's dry run needs none."""
    tid = (await api.create_ticket())["id"]
    agent = {
        "X-Actor-Type": "agent",
        "X-Actor-Id": "agent-1",
        "X-Actor-Role": "dispatcher",
        "X-Tool-Name": "ticket.cancel",
    }
    before = await counts(api)

    held = await dry(
        api, f"/v1/tickets/{tid}/cancel", {"reason": "dup"}, as_="gateway", headers=agent
    )
    direct = await dry(api, f"/v1/tickets/{tid}/cancel", {"reason": "dup"}, as_="dispatcher")

    assert held.status == 200, held.body
    assert held.body["transition"] == {"from": "READY_TO_SCHEDULE", "to": "CANCELLED"}
    approval = held.body["approval"]
    assert (approval["rule"], approval["approvers"]) == ("cancel", ["supervisor", "dispatcher"])
    assert len(approval["rule_version"]) == 12
    assert direct.status == 200, direct.body
    assert direct.body["approval"] is None
    assert await counts(api) == before
    assert await api.count("SELECT count(*) FROM approvals") == 0
