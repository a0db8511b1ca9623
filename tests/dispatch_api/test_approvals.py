"""Approvals end to end over HTTP: an agent's gated call waits for a person, runs once when
approved, and its re-send learns how it ended."""

from __future__ import annotations

from testkit.api import Api
from testkit.approvals import AGENT_ID, cancel_call, decide, event_types, statuses


async def test_an_agents_cancel_waits_for_approval_with_one_record_and_one_event(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])

    reply = await call.send()

    assert reply.status == 202, reply.body
    approval = reply.body["approval"]
    assert approval["status"] == "pending"
    assert approval["tool"] == "ticket.cancel"
    assert approval["action"] == "cancel"
    assert approval["ticket_id"] == ticket["id"]
    assert approval["ticket_version"] == 1
    assert approval["ticket_state"] == "READY_TO_SCHEDULE"
    assert approval["ticket_priority"] == "P2"
    assert approval["arguments"] == call.body
    assert approval["request_id"] == call.request_id
    assert approval["requested_by"] == {"type": "agent", "id": AGENT_ID, "role": "dispatcher"}
    assert approval["rule"] == "cancel"
    assert approval["approvers"] == ["supervisor", "dispatcher"]
    assert approval["decided_at"] is None
    assert approval["result"] is None
    assert await statuses(api) == ["pending"]
    events = await api.timeline(ticket["id"])
    assert [e["type"] for e in events] == ["created", "approval_requested"]
    requested = events[-1]
    assert (requested["actor_id"], requested["tool_name"]) == (AGENT_ID, "ticket.cancel")
    assert requested["details"]["approval_id"] == approval["id"]
    assert requested["details"]["rule_version"] == approval["rule_version"]
    assert (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body["state"] == (
        "READY_TO_SCHEDULE"
    )
    assert await api.count("SELECT count(*) FROM idempotency_keys") == 1  # the create's only


async def test_a_resend_while_pending_finds_the_same_approval_and_a_changed_body_is_refused(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])
    first = await call.send()

    again = await call.send()
    changed = await call.send({"reason": "something else entirely"})

    assert again.status == 202
    assert again.body["approval"]["id"] == first.body["approval"]["id"]
    assert changed.status == 422, changed.body
    assert changed.body["code"] == "idempotency_conflict"
    assert await statuses(api) == ["pending"]
    assert await event_types(api, ticket["id"]) == ["created", "approval_requested"]


async def test_approving_runs_the_call_once_as_the_agent_and_the_resend_replays_it(
    api: Api,
) -> None:
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])
    approval_id = (await call.send()).body["approval"]["id"]

    approved = await decide(api, approval_id, "approve", as_="dispatcher", reason="confirmed")
    resent = await call.send()

    assert approved.status == 200, approved.body
    view = approved.body["approval"]
    assert view["status"] == "executed"
    assert view["decided_by"] == {"id": "disp-1", "role": "dispatcher"}
    assert view["reason"] == "confirmed"
    assert view["result"]["status"] == 200
    assert view["result"]["body"]["ticket"]["state"] == "CANCELLED"
    assert resent.status == 200
    assert resent.headers["Idempotent-Replayed"] == "true"
    assert resent.body == view["result"]["body"]
    events = await api.timeline(ticket["id"])
    assert [e["type"] for e in events] == [
        "created",
        "approval_requested",
        "approval_granted",
        "cancelled",
    ]
    granted, cancelled = events[2], events[3]
    assert granted["actor_id"] == "disp-1"
    assert (cancelled["actor_type"], cancelled["actor_id"]) == ("agent", AGENT_ID)
    assert cancelled["tool_name"] == "ticket.cancel"
    assert cancelled["request_id"] == call.request_id
    assert cancelled["reason"] == call.body["reason"]
    assert cancelled["details"]["approved_by"] == {"id": "disp-1", "role": "dispatcher"}
    assert cancelled["details"]["approval_id"] == approval_id
    assert await statuses(api) == ["executed"]


async def test_denying_needs_a_reason_and_the_resend_is_told_it_was_denied(api: Api) -> None:
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])
    approval_id = (await call.send()).body["approval"]["id"]

    without_reason = await decide(api, approval_id, "deny")
    denied = await decide(api, approval_id, "deny", reason="the customer still wants it")
    resent = await call.send()

    assert without_reason.status == 422
    assert without_reason.body["code"] == "validation_failed"
    assert denied.status == 200, denied.body
    assert denied.body["approval"]["status"] == "denied"
    assert resent.status == 409
    assert resent.body["code"] == "approval_denied"
    assert "the customer still wants it" in resent.body["detail"]
    assert resent.body["approval"]["reason"] == "the customer still wants it"
    assert await event_types(api, ticket["id"]) == [
        "created",
        "approval_requested",
        "approval_denied",
    ]
    assert (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body["state"] == (
        "READY_TO_SCHEDULE"
    )


async def test_an_approval_of_a_ticket_changed_since_the_request_goes_stale(api: Api) -> None:
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])
    approval_id = (await call.send()).body["approval"]["id"]
    updated = await api.request(
        "PATCH", f"/v1/tickets/{ticket['id']}", json={"priority": "P1"}, as_="dispatcher"
    )
    assert updated.status == 200

    approved = await decide(api, approval_id, "approve")
    resent = await call.send()

    assert approved.status == 409
    assert approved.body["code"] == "approval_stale"
    assert approved.body["approval"]["status"] == "stale"
    assert resent.status == 409
    assert resent.body["code"] == "approval_stale"
    assert "read the ticket again" in resent.body["detail"]
    assert (await api.request("GET", f"/v1/tickets/{ticket['id']}")).body["state"] == (
        "READY_TO_SCHEDULE"
    )
    assert (await event_types(api, ticket["id"]))[-1] == "approval_stale"
    assert "cancelled" not in await event_types(api, ticket["id"])


async def test_a_person_calling_dispatch_api_directly_is_never_gated(api: Api) -> None:
    ticket = await api.create_ticket()

    reply = await api.act(ticket["id"], "cancel", {"reason": "duplicate"}, as_="dispatcher")

    assert reply.status == 200, reply.body
    assert reply.body["ticket"]["state"] == "CANCELLED"
    assert await statuses(api) == []


async def test_the_requester_withdraws_and_its_resend_is_told_so(api: Api) -> None:
    ticket = await api.create_ticket()
    call = cancel_call(api, ticket["id"])
    approval_id = (await call.send()).body["approval"]["id"]
    agent = {"X-Actor-Type": "agent", "X-Actor-Id": AGENT_ID, "X-Actor-Role": "dispatcher"}

    by_a_person = await decide(api, approval_id, "withdraw", as_="dispatcher")
    withdrawn = await api.request(
        "POST",
        f"/v1/approvals/{approval_id}/withdraw",
        json={},
        as_="gateway",
        key=None,
        headers=agent,
    )
    approve_after = await decide(api, approval_id, "approve")
    resent = await call.send()

    assert by_a_person.status == 403
    assert withdrawn.status == 200, withdrawn.body
    assert withdrawn.body["approval"]["status"] == "withdrawn"
    assert approve_after.status == 409
    assert approve_after.body["code"] == "approval_decided"
    assert resent.status == 409
    assert resent.body["code"] == "approval_withdrawn"
    assert (await event_types(api, ticket["id"]))[-1] == "approval_withdrawn"


async def test_a_call_the_domain_refuses_is_refused_at_once_and_nobody_is_asked(api: Api) -> None:
    ticket = await api.create_ticket()
    assert (
        await api.act(ticket["id"], "cancel", {"reason": "dup"}, as_="dispatcher")
    ).status == 200

    reply = await cancel_call(api, ticket["id"]).send()

    assert reply.status == 409, reply.body
    assert reply.body["code"] == "invalid_transition"
    assert await statuses(api) == []
    assert "approval_requested" not in await event_types(api, ticket["id"])


async def test_an_sla_breach_or_a_refused_action_while_waiting_does_not_make_it_stale(
    api: Api,
) -> None:
    """Events that change nothing about the ticket (a P1 breaching its response target as it
    waits, someone's refused action) leave the approval valid: approving it runs the call."""
    ticket = await api.create_ticket(priority="P1")
    api.clock.advance(minutes=110)  # P1: a response within 2 hours
    call = cancel_call(api, ticket["id"])
    approval_id = (await call.send()).body["approval"]["id"]
    refused = await api.act(ticket["id"], "resume", {"reason": "not held"}, as_="dispatcher")
    assert refused.status == 409
    api.clock.advance(minutes=11)  # breached; the approval is good for 60 minutes
    assert await api.app_service.sweep_sla() == 1

    approved = await decide(api, approval_id, "approve")

    assert approved.status == 200, approved.body
    assert approved.body["approval"]["status"] == "executed"
    types = await event_types(api, ticket["id"])
    assert types[-4:] == ["action_rejected", "sla_breached", "approval_granted", "cancelled"]
