"""What the approvals page says when an approval does not end in a plain run: approved but
refused by the domain when it ran, and stale (the ticket changed after the agent asked)."""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import replace

import pytest

from dispatch_api.domain import parse_policy
from dispatch_api.settings import ApiSettings
from testkit.api import WINDOW, Api, window
from testkit.approvals import AgentCall, statuses
from testkit.console import Page, signed_in


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    rules = [{"name": "schedule", "tool": "ticket.schedule", "approvers": ["supervisor"]}]
    return replace(api_settings, approvals=parse_policy({"rules": rules}))


def flash(page: Page) -> str:
    found = re.search(r'<p class="flash error" role="status">(.*?)</p>', page.text, re.S)
    assert found, "the page shows no outcome"
    return html.unescape(found.group(1))


async def held_schedule(api: Api, body: dict[str, str]) -> tuple[str, AgentCall, str]:
    tid = str((await api.create_ticket())["id"])
    call = AgentCall(api, tid, "schedule", "ticket.schedule", body, str(uuid.uuid4()))
    asked = await call.send()
    assert asked.status == 202, asked.body
    return tid, call, asked.body["approval"]["id"]


async def approve(api: Api, approval_id: str) -> tuple[Page, Page]:
    async with signed_in(api, "supervisor") as person:
        form = await person.get("/console/approvals")
        decided = await person.post(
            f"/console/approvals/{approval_id}/approve", {"csrf_token": form.csrf_token}
        )
        return decided, await person.get(decided.headers["Location"])


async def test_an_approved_call_the_domain_refuses_is_said_to_be_refused_with_why(
    api: Api,
) -> None:
    tid, call, approval_id = await held_schedule(api, WINDOW)
    other = str((await api.create_ticket())["id"])
    booked = await api.act(other, "schedule", WINDOW, as_="dispatcher")  # meanwhile
    assert booked.status == 200, booked.body

    decided, after = await approve(api, approval_id)
    resent = await call.send()

    assert decided.headers["Location"].endswith("&outcome=refused")
    assert flash(after).startswith(
        f"Approved, but dispatch-api refused ticket.schedule on ticket {tid}: "
    )
    assert flash(after).endswith(". Nothing changed.")
    assert "<td>approved (409)</td>" in after.text
    assert resent.status == 409  # the agent reads the same refusal, replayed
    assert await statuses(api) == ["approved"]


async def test_an_approval_whose_ticket_changed_meanwhile_is_said_to_be_stale(api: Api) -> None:
    tid, _, approval_id = await held_schedule(api, window(1))
    moved = await api.act(tid, "schedule", window(2), as_="dispatcher")  # a person, meanwhile
    assert moved.status == 200, moved.body

    decided, after = await approve(api, approval_id)

    assert decided.headers["Location"].endswith("&outcome=stale")
    assert flash(after) == (
        f"Not run: the ticket changed after ticket.schedule on ticket {tid} was asked for"
        " (stale); nothing was done."
    )
    assert await statuses(api) == ["stale"]
    ticket = await api.request("GET", f"/v1/tickets/{tid}")
    assert ticket.body["assignment"]["window_start"].startswith(window(2)["window_start"][:19])
