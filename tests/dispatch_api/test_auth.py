"""Bearer tokens, roles, the trusted gateway's actor headers, and technicians' own tickets."""

from __future__ import annotations

import uuid
from typing import Any

from testkit.api import COMPLETE_TICKET, WINDOW, Api

GATEWAY_ACTOR = {
    "X-Actor-Type": "agent",
    "X-Actor-Id": "agent-7",
    "X-Actor-Role": "dispatcher",
    "X-Tool-Name": "ticket.create",
}

NOTE_BY_URI = {
    "kind": "document",
    "content_type": "application/pdf",
    "uri": "https://files.example/readings/42.pdf",
    "sha256": "ab" * 32,
    "size_bytes": 48213,
}


async def test_a_request_without_a_token_is_refused_with_www_authenticate(api: Api) -> None:
    reply = await api.request("GET", "/v1/tickets", as_="")

    assert reply.status == 401
    assert reply.body["code"] == "unauthenticated"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_an_unknown_token_is_refused(api: Api) -> None:
    reply = await api.request(
        "POST",
        "/v1/tickets",
        json=COMPLETE_TICKET,
        as_="",
        headers={"Authorization": "Bearer not-a-real-token"},
    )

    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]
    assert await api.count("SELECT count(*) FROM tickets") == 0


async def test_health_and_the_api_document_need_no_token(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        reply = await api.request("GET", path, as_="")
        assert reply.status == 200, path


async def test_an_untrusted_principal_asserting_an_actor_is_forbidden_and_writes_nothing(
    api: Api,
) -> None:
    reply = await api.request(
        "POST", "/v1/tickets", json=COMPLETE_TICKET, as_="dispatcher", headers=GATEWAY_ACTOR
    )

    assert reply.status == 403
    assert reply.body["code"] == "actor_assertion_forbidden"
    assert await api.count("SELECT count(*) FROM tickets") == 0


async def test_the_gateway_records_the_agent_and_tool_it_acts_for(api: Api) -> None:
    reply = await api.request(
        "POST", "/v1/tickets", json=COMPLETE_TICKET, as_="gateway", headers=GATEWAY_ACTOR
    )

    assert reply.status == 201, reply.body
    event = (await api.timeline(reply.body["ticket"]["id"]))[0]
    assert (event["actor_type"], event["actor_id"], event["role"], event["tool_name"]) == (
        "agent",
        "agent-7",
        "dispatcher",
        "ticket.create",
    )


async def test_the_gateway_acting_for_a_technician_is_held_to_the_technicians_rules(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    as_tech = {**GATEWAY_ACTOR, "X-Actor-Role": "technician", "X-Actor-Id": "tech-1"}

    reply = await api.act(ticket["id"], "schedule", WINDOW, as_="gateway", headers=as_tech)

    assert reply.status == 403
    assert reply.body["code"] == "forbidden"


async def test_the_gateway_cannot_assert_an_unknown_role_or_a_partial_actor(api: Api) -> None:
    bad_role = {**GATEWAY_ACTOR, "X-Actor-Role": "gateway"}
    partial = {"X-Actor-Type": "agent"}
    for headers in (bad_role, partial):
        reply = await api.request(
            "POST", "/v1/tickets", json=COMPLETE_TICKET, as_="gateway", headers=headers
        )
        assert reply.status == 400
        assert reply.body["code"] == "invalid_header"
    assert await api.count("SELECT count(*) FROM tickets") == 0


async def test_a_technician_acts_only_on_tickets_assigned_to_them(api: Api) -> None:
    mine = await api.create_ticket()
    theirs = await api.create_ticket()
    await api.act(mine["id"], "schedule", WINDOW)
    await api.act(theirs["id"], "schedule", {**WINDOW, "technician_id": "tech-2"})
    for t in (mine, theirs):
        await api.act(t["id"], "dispatch")

    refused = await api.act(theirs["id"], "arrive", as_="technician")
    accepted = await api.act(mine["id"], "arrive", as_="technician")

    assert refused.status == 404
    assert refused.body["code"] == "ticket_not_found"
    assert accepted.status == 200
    assert accepted.body["ticket"]["state"] == "ON_SITE"
    assert [e["type"] for e in await api.timeline(theirs["id"])][-1] == "dispatched"


async def test_a_technician_sees_only_their_own_tickets(api: Api) -> None:
    mine = await api.create_ticket()
    theirs = await api.create_ticket()
    await api.act(mine["id"], "schedule", WINDOW)

    listing = await api.request("GET", "/v1/tickets", as_="technician")
    other = await api.request("GET", f"/v1/tickets/{theirs['id']}", as_="technician")
    timeline = await api.request("GET", f"/v1/tickets/{theirs['id']}/timeline", as_="technician")

    assert [t["id"] for t in listing.body["items"]] == [mine["id"]]
    assert other.status == timeline.status == 404


async def test_a_technician_cannot_tell_an_unassigned_ticket_from_a_missing_one(
    api: Api,
) -> None:
    theirs = await api.create_ticket()
    await api.act(theirs["id"], "schedule", {**WINDOW, "technician_id": "tech-2"})
    attached = await api.act(theirs["id"], "evidence", NOTE_BY_URI)
    evidence_id = attached.body["evidence"]["id"]
    missing = str(uuid.uuid4())
    before = await api.count("SELECT count(*) FROM timeline_events")

    def routes(tid: str) -> list[tuple[str, str, Any]]:
        return [
            ("GET", f"/v1/tickets/{tid}", None),
            ("GET", f"/v1/tickets/{tid}/timeline", None),
            ("GET", f"/v1/tickets/{tid}/evidence", None),
            ("GET", f"/v1/tickets/{tid}/evidence/{evidence_id}", None),
            ("GET", f"/v1/tickets/{tid}/evidence/{evidence_id}/content", None),
            ("POST", f"/v1/tickets/{tid}/arrive", None),
            ("POST", f"/v1/tickets/{tid}/hold", {"reason": "x", "cause": "customer"}),
            ("POST", f"/v1/tickets/{tid}/evidence", NOTE_BY_URI),
        ]

    answers = []
    for tid in (theirs["id"], missing):
        for method, path, body in routes(tid):
            reply = await api.request(method, path, json=body, as_="technician")
            detail = reply.body["detail"].replace(tid, "{id}")
            answers.append((path.replace(tid, "{id}"), reply.status, reply.body["code"], detail))

    half = len(answers) // 2
    assert answers[:half] == answers[half:]
    assert {(a[1], a[2]) for a in answers} == {(404, "ticket_not_found")}
    assert await api.count("SELECT count(*) FROM timeline_events") == before


async def test_roles_gate_actions(api: Api) -> None:
    ticket = await api.create_ticket()

    tech_creates = await api.request("POST", "/v1/tickets", json=COMPLETE_TICKET, as_="technician")
    dispatcher_completes = await api.act(ticket["id"], "complete", as_="dispatcher")

    assert tech_creates.status == dispatcher_completes.status == 403
    assert dispatcher_completes.body["action"] == "complete"
    assert await api.count("SELECT count(*) FROM timeline_events") == 1
