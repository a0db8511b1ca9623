"""What an agent sees over REST when dispatch-api's approval policy holds its call: 202
approval_pending (nothing ran), the same approval on every re-send, then the executed result
as a replay once a person approves, or approval_denied once a person denies; approval.status
reads only the agent's own approvals; no agent tool approves anything."""

from __future__ import annotations

import uuid

from testkit.api import Reply
from tools import catalog

from ._approval_steps import CANCEL, approvals, decide, ticket, ticket_state
from .conftest import AGENTS, Bridge
from .test_metrics import by_labels, one, parse


async def _cancel(bridge: Bridge, tid: str, call_id: str, as_: str = "dispatcher") -> Reply:
    return await bridge.invoke(
        "ticket.cancel", {"ticket_id": tid, **CANCEL}, as_=as_, tool_call_id=call_id
    )


def _approval_id(reply: Reply) -> str:
    assert reply.status == 202, reply.body
    return str(reply.body["error"]["details"]["approval_id"])


async def test_a_gated_cancel_answers_202_approval_pending_and_changes_nothing(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)

    reply = await _cancel(bridge, tid, "cancel-1")

    assert reply.status == 202
    assert reply.body["ok"] is False
    error = reply.body["error"]
    assert error["code"] == "approval_pending"
    assert error["retryable"] is True
    assert 1 <= error["retry_after_ms"] <= 30_000
    assert reply.headers["Retry-After"]
    details = error["details"]
    assert details["outcome"] == "none"
    assert details["approval_status"] == "pending"
    assert details["rule"] == "cancel"
    assert sorted(details["approvers"]) == ["dispatcher", "supervisor"]
    assert details["expires_at"]
    uuid.UUID(details["approval_id"])
    assert "SAME tool_call_id" in error["message"]
    assert "approval.status" in error["message"]
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_the_same_call_re_sent_while_pending_finds_its_one_approval(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    first = _approval_id(await _cancel(bridge, tid, "cancel-again"))

    again = await _cancel(bridge, tid, "cancel-again")

    assert _approval_id(again) == first
    assert (
        again.body["request_id"] == (await _cancel(bridge, tid, "cancel-again")).body["request_id"]
    )
    assert await approvals(bridge.api) == 1
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_once_a_person_approves_the_re_sent_call_returns_the_executed_result_as_a_replay(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    approval_id = _approval_id(await _cancel(bridge, tid, "cancel-ok"))

    decided = await decide(bridge.api, approval_id, "approve", "confirmed by phone")
    resent = await _cancel(bridge, tid, "cancel-ok")

    assert decided["status"] == "executed"
    assert resent.status == 200, resent.body
    assert resent.body["ok"] is True
    assert resent.body["replayed"] is True
    assert resent.body["result"]["ticket"]["state"] == "CANCELLED"
    assert resent.body["result"] == decided["result"]["body"]
    assert await ticket_state(bridge.api, tid) == "CANCELLED"
    timeline = await bridge.api.timeline(tid)
    cancelled = [e for e in timeline if e["to_state"] == "CANCELLED"]
    assert len(cancelled) == 1
    assert (cancelled[0]["actor_type"], cancelled[0]["actor_id"]) == ("agent", "agent-disp")


async def test_once_a_person_denies_the_re_sent_call_is_approval_denied_with_the_reason(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    approval_id = _approval_id(await _cancel(bridge, tid, "cancel-no"))

    await decide(bridge.api, approval_id, "deny", "customer still wants the visit")
    resent = await _cancel(bridge, tid, "cancel-no")

    assert resent.status == 409
    assert resent.body["ok"] is False
    error = resent.body["error"]
    assert error["code"] == "approval_denied"
    assert error["retryable"] is False
    assert error["details"]["approval_id"] == approval_id
    assert error["details"]["approval_status"] == "denied"
    assert error["details"]["reason"] == "customer still wants the visit"
    assert error["details"]["outcome"] == "none"
    assert "customer still wants the visit" in error["message"]
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"
    assert await approvals(bridge.api) == 1


async def test_approval_status_shows_the_agent_its_approval_pending_then_executed(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    approval_id = _approval_id(await _cancel(bridge, tid, "cancel-status"))

    pending = await bridge.invoke("approval.status", {"approval_id": approval_id}, as_="dispatcher")
    await decide(bridge.api, approval_id, "approve")
    executed = await bridge.invoke(
        "approval.status", {"approval_id": approval_id}, as_="dispatcher"
    )

    assert pending.status == 200, pending.body
    view = pending.body["result"]["approval"]
    assert (view["id"], view["status"], view["tool"]) == (approval_id, "pending", "ticket.cancel")
    assert view["arguments"] == CANCEL
    assert view["requested_by"] == {"type": "agent", "id": "agent-disp", "role": "dispatcher"}
    assert view["result"] is None
    after = executed.body["result"]["approval"]
    assert after["status"] == "executed"
    assert after["decided_by"] == {"id": "sup-1", "role": "supervisor"}
    assert after["result"]["body"]["ticket"]["state"] == "CANCELLED"


async def test_another_agents_approval_is_not_found_for_approval_status(bridge: Bridge) -> None:
    tid = await ticket(bridge.api)
    approval_id = _approval_id(await _cancel(bridge, tid, "cancel-mine", as_="dispatcher"))

    theirs = await bridge.invoke("approval.status", {"approval_id": approval_id}, as_="supervisor")
    unknown = await bridge.invoke(
        "approval.status", {"approval_id": str(uuid.uuid4())}, as_="dispatcher"
    )

    for reply in (theirs, unknown):
        assert reply.status == 404, reply.body
        assert reply.body["error"]["code"] == "not_found"
        assert "approval" not in reply.body["error"]["details"]


async def test_no_agent_has_a_tool_that_approves_and_an_approve_tool_is_unknown(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    approval_id = _approval_id(await _cancel(bridge, tid, "cancel-self"))

    for role in AGENTS:
        listed = await bridge.request("GET", "/v1/tools", as_=role)
        names = [t["title"] for t in listed.body["tools"]]  # the dotted names
        assert "approval.status" in names, role
        assert not [n for n in names if "approve" in n or "deny" in n or "decide" in n]
    for name in ("approval.approve", "approval_approve", "approval.deny"):
        reply = await bridge.invoke(name, {"approval_id": approval_id}, as_="supervisor")
        assert reply.status == 404
        assert reply.body["error"]["code"] == "unknown_tool"
    assert [t.name for t in catalog() if "approv" in t.name] == ["approval.status"]
    assert await ticket_state(bridge.api, tid) == "READY_TO_SCHEDULE"


async def test_a_held_call_is_counted_as_approval_pending_and_never_retried(
    bridge: Bridge,
) -> None:
    tid = await ticket(bridge.api)
    before = bridge.proxy.requests

    await _cancel(bridge, tid, "cancel-counted")
    await _cancel(bridge, tid, "cancel-counted")
    exposition = (await bridge.request("GET", "/metrics", as_="")).raw.decode()

    assert bridge.proxy.requests == before + 2  # one try each: a 202 is a final answer
    series = parse(exposition)
    held = {"tool": "ticket.cancel", "code": "approval_pending"}
    assert one(series, "tool_invocations_total", held) == 2
    assert by_labels(series, "tool_retries_total", "tool", "reason") == {}
