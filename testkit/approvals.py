"""Gated agent calls against a running dispatch-api: ask as the gateway's agent, decide as
a person, read what the database holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from dispatch_api.domain import ApprovalPolicy
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect

from .api import Api, Reply

AGENT_ID = "agent-7"


def without_approvals(settings: ApiSettings) -> ApiSettings:
    """`settings` with an explicit empty `[approvals]` policy, for tests about something
    else that call gated tools (the product's default gates ticket.cancel)."""
    return replace(settings, approvals=ApprovalPolicy(()))


def agent_headers(tool: str, request_id: str, agent_id: str = AGENT_ID) -> dict[str, str]:
    """What the bridge sends for an agent's call: the actor it vouches for, the tool, and
    the call's request id (its Idempotency-Key too)."""
    return {
        "X-Actor-Type": "agent",
        "X-Actor-Id": agent_id,
        "X-Actor-Role": "dispatcher",
        "X-Tool-Name": tool,
        "X-Request-ID": request_id,
    }


@dataclass
class AgentCall:
    """One agent tool call that acts on a ticket; `send` re-sends it exactly (same key)."""

    api: Api
    ticket_id: str
    action: str
    tool: str
    body: dict[str, Any]
    request_id: str
    agent_id: str = AGENT_ID

    async def send(self, body: dict[str, Any] | None = None) -> Reply:
        return await self.api.act(
            self.ticket_id,
            self.action,
            self.body if body is None else body,
            as_="gateway",
            key=self.request_id,
            headers=agent_headers(self.tool, self.request_id, self.agent_id),
        )


def cancel_call(api: Api, ticket_id: str, reason: str = "customer called it off") -> AgentCall:
    return AgentCall(
        api, ticket_id, "cancel", "ticket.cancel", {"reason": reason}, str(uuid.uuid4())
    )


async def decide(
    api: Api, approval_id: str, verdict: str, as_: str = "supervisor", **body: Any
) -> Reply:
    """POST /v1/approvals/{id}/{verdict} (approve, deny, withdraw) as principal `as_`."""
    return await api.request(
        "POST", f"/v1/approvals/{approval_id}/{verdict}", json=body, as_=as_, key=None
    )


async def statuses(api: Api) -> list[str]:
    """Every approval's status, oldest first, straight from the database."""
    conn = await connect(api.database_url)
    try:
        rows = await conn.fetch("SELECT status FROM approvals ORDER BY requested_at, id")
    finally:
        await conn.close()
    return [r["status"] for r in rows]


async def event_types(api: Api, ticket_id: str) -> list[str]:
    return [e["type"] for e in await api.timeline(ticket_id)]
