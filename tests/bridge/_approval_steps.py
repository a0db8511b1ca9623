"""Steps the approval tests share: a ticket an agent asks to cancel, and a person deciding
through dispatch-api's own routes (as the CLI and the console do)."""

from __future__ import annotations

from typing import Any

from testkit.api import Api

#: The default policy holds ticket.cancel for a supervisor's or dispatcher's approval.
CANCEL = {"reason": "customer fixed it themselves"}


async def ticket(api: Api) -> str:
    """A READY_TO_SCHEDULE ticket, made by a person (never gated)."""
    created = await api.create_ticket()
    return str(created["id"])


async def decide(api: Api, approval_id: str, decision: str, reason: str | None = None) -> Any:
    """A human supervisor approves or denies through dispatch-api; the approval view."""
    body = {"reason": reason} if reason is not None else {}
    reply = await api.request(
        "POST", f"/v1/approvals/{approval_id}/{decision}", json=body, as_="supervisor"
    )
    assert reply.status == 200, reply.body
    return reply.body["approval"]


async def ticket_state(api: Api, ticket_id: str) -> str:
    reply = await api.request("GET", f"/v1/tickets/{ticket_id}")
    assert reply.status == 200, reply.body
    return str(reply.body["state"])


async def approvals(api: Api) -> int:
    return await api.count("SELECT count(*) FROM approvals")
