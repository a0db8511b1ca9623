"""The approvals page: what exactly would run, approve and deny with the API's rules, the
outcome said after the redirect, and the agent's held call run once."""

from __future__ import annotations

import html
import re
import uuid

from dispatch_api.domain import Role
from dispatch_api.store import connect, principals
from testkit.api import COMPLETE_TICKET, Api
from testkit.approvals import AGENT_ID, AgentCall, cancel_call, event_types, statuses
from testkit.console import Page, signed_in
from tests.bridge.conftest import Bridge, bridge, bridge_overrides, bridge_retry

__all__ = ["bridge", "bridge_overrides", "bridge_retry"]  # the bridge harness, for pytest


def flash(page: Page) -> str:
    found = re.search(r'<p class="flash \w+" role="status">(.*?)</p>', page.text, re.S)
    assert found, "the page shows no outcome"
    return html.unescape(found.group(1))


def refusal(page: Page) -> str:
    found = re.search(r'<p class="flash error" role="status">(.*?)</p>', page.text, re.S)
    assert found, "the page shows no refusal"
    return html.unescape(found.group(1))


async def pending_cancel(api: Api, reason: str = "customer called it off") -> tuple[str, str]:
    ticket = await api.create_ticket()
    reply = await cancel_call(api, ticket["id"], reason).send()
    assert reply.status == 202, reply.body
    return ticket["id"], reply.body["approval"]["id"]


async def test_approving_in_the_console_runs_the_agents_held_call_once_and_its_re_send_replays_it(
    bridge: Bridge,
) -> None:
    created = await bridge.invoke("ticket.create", COMPLETE_TICKET)
    tid = created.body["result"]["ticket"]["id"]
    cancel = {"ticket_id": tid, "reason": "duplicate of another ticket"}
    held = await bridge.invoke("ticket.cancel", cancel, as_="dispatcher", tool_call_id="c-1")
    assert held.status == 202, held.body

    async with signed_in(bridge.api, "supervisor") as person:
        listing = await person.get("/console/approvals")
        [approval_id] = re.findall(r'"/console/approvals/([0-9a-f-]+)/approve"', listing.text)
        decided = await person.post(
            f"/console/approvals/{approval_id}/approve",
            {"csrf_token": listing.csrf_token, "reason": "confirmed by phone"},
        )
        after = await person.get(decided.headers["Location"])
    resent = await bridge.invoke("ticket.cancel", cancel, as_="dispatcher", tool_call_id="c-1")

    # What would run, exactly: the tool, the ticket, its state when asked, who asked.
    assert listing.status == 200
    assert f'<a href="/console/tickets/{tid}">{tid}</a>' in listing.text
    assert "<code>ticket.cancel</code>" in listing.text
    assert "READY_TO_SCHEDULE" in listing.text
    assert "agent agent-disp (dispatcher)" in listing.text
    assert "&#34;reason&#34;: &#34;duplicate of another ticket&#34;" in listing.text
    assert decided.status == 303
    assert decided.headers["Location"] == (
        f"/console/approvals?approval={approval_id}&outcome=executed"
    )
    assert flash(after) == (
        f"Approved: ticket.cancel on ticket {tid} ran (dispatch-api answered 200)."
    )
    assert "None: no agent call is waiting for a person." in after.text
    assert "<td>executed (200)</td>" in after.text
    assert "<td>sup-1 (supervisor)</td>" in after.text
    # The agent's re-sent call gets the stored result; the cancel happened once.
    assert resent.status == 200, resent.body
    assert resent.body["replayed"] is True
    assert resent.body["result"]["ticket"]["state"] == "CANCELLED"
    cancelled = [e for e in await bridge.api.timeline(tid) if e["to_state"] == "CANCELLED"]
    assert [(e["actor_type"], e["actor_id"]) for e in cancelled] == [("agent", "agent-disp")]


async def test_denying_needs_a_reason_and_the_agents_re_send_is_then_told_it(api: Api) -> None:
    ticket = await api.create_ticket(customer_name="<script>alert(1)</script>")
    call = cancel_call(api, ticket["id"], "<img src=x onerror=alert(1)>")
    asked = await call.send()
    approval_id = asked.body["approval"]["id"]

    async with signed_in(api, "dispatcher") as person:
        listing = await person.get("/console/approvals")
        path = f"/console/approvals/{approval_id}/deny"
        blank = await person.post(path, {"csrf_token": listing.csrf_token, "reason": "  "})
        events_after_blank = await event_types(api, ticket["id"])
        denied = await person.post(path, {"csrf_token": listing.csrf_token, "reason": "wrong one"})
        after = await person.get(denied.headers["Location"])
        again = await person.post(
            f"/console/approvals/{approval_id}/approve", {"csrf_token": listing.csrf_token}
        )
        late = await person.get(again.headers["Location"])
    resent = await call.send()

    # Attacker-controlled arguments are text on the page, never markup.
    assert "<img src=x" not in listing.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in listing.text
    assert blank.status == 400
    assert refusal(blank) == "Not done: a reason is required to deny a call."
    assert events_after_blank == ["created", "approval_requested"]
    assert denied.status == 303
    assert flash(after) == (
        f"Denied: ticket.cancel on ticket {ticket['id']} will not run. Reason: wrong one"
    )
    assert again.headers["Location"].endswith("&outcome=decided")
    assert flash(late) == (
        f"Already decided: the approval of ticket.cancel on ticket {ticket['id']} is denied"
        " (by disp-1); a decision is final."
    )
    assert resent.status == 409
    assert resent.body["code"] == "approval_denied"
    assert "reason: wrong one" in resent.body["detail"]
    assert await statuses(api) == ["denied"]


async def test_a_role_the_rule_does_not_name_and_the_requester_cannot_approve_and_nothing_changes(
    api: Api,
) -> None:
    # The shipped emergency-dispatch rule lets only supervisors decide.
    ticket = await api.create_ticket(priority="P1")
    await api.ensure_technician("tech-1")
    body = {"technician_id": "tech-1", "bypass_reason": "gas smell reported"}
    call = AgentCall(api, ticket["id"], "dispatch", "ticket.dispatch", body, str(uuid.uuid4()))
    approval_id = (await call.send()).body["approval"]["id"]
    # A person whose id is the requesting agent's.
    token = principals.new_token()
    conn = await connect(api.database_url)
    try:
        await principals.upsert(conn, AGENT_ID, Role.SUPERVISOR, token)
    finally:
        await conn.close()
    api.tokens["requester"] = token
    path = f"/console/approvals/{approval_id}/approve"

    async with signed_in(api, "dispatcher") as dispatcher:
        dispatcher_form = await dispatcher.get("/console/approvals")
        by_dispatcher = await dispatcher.post(path, {"csrf_token": dispatcher_form.csrf_token})
    async with signed_in(api, "requester") as requester:
        requester_form = await requester.get("/console/approvals")
        by_requester = await requester.post(path, {"csrf_token": requester_form.csrf_token})

    # Neither is offered the forms; a POST anyway gets the API's own refusals (403
    # forbidden, 403 self_approval), worded as on the API.
    assert "Not yours to decide: only supervisor may decide (you are dispatcher)." in (
        dispatcher_form.text
    )
    assert "Not yours to decide: you asked for this call: another person decides." in (
        requester_form.text
    )
    assert path not in dispatcher_form.text + requester_form.text
    assert by_dispatcher.status == 403
    assert refusal(by_dispatcher) == (
        "Not done: rule emergency-dispatch lets only supervisor decide this approval."
    )
    assert by_requester.status == 403
    assert refusal(by_requester) == "Not done: the requester of a call may not decide on it."
    assert await statuses(api) == ["pending"]
    assert await event_types(api, ticket["id"]) == ["created", "approval_requested"]


async def test_an_approve_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    api: Api,
) -> None:
    ticket_id, approval_id = await pending_cancel(api)
    path = f"/console/approvals/{approval_id}/approve"

    async with signed_in(api, "supervisor") as person:
        missing = await person.post(path, {"reason": "ok"})
        forged = await person.post(path, {"csrf_token": "x" * 43, "reason": "ok"})

    assert (missing.status, forged.status) == (403, 403)
    assert "did not come from the console" in forged.text
    assert await statuses(api) == ["pending"]
    assert await event_types(api, ticket_id) == ["created", "approval_requested"]


async def test_an_unknown_or_malformed_approval_is_the_404_page_and_a_forged_outcome_says_nothing(
    api: Api,
) -> None:
    async with signed_in(api, "supervisor") as person:
        form = await person.get("/console/approvals")
        unknown = await person.post(
            f"/console/approvals/{uuid.uuid4()}/approve", {"csrf_token": form.csrf_token}
        )
        malformed = await person.post(
            "/console/approvals/not-an-id/deny", {"csrf_token": form.csrf_token, "reason": "x"}
        )
        forged = await person.get(
            f"/console/approvals?approval={uuid.uuid4()}&outcome=<b>executed</b>"
        )

    assert (unknown.status, malformed.status) == (404, 404)
    assert forged.status == 200
    assert 'class="flash' not in forged.text
    assert "<b>executed" not in forged.text
