"""The peer for the "Peer" scenario: the same tools served by the official `mcp` package's
own server (`MCPServer`, formerly `FastMCP`; mcp 2.x), forwarding to the same dispatch-api
the way the SDK's documentation shows. Benchmark-only; nothing in the product imports it.

    python -m bench.peer_server PORT API_URL GATEWAY_TOKEN

Configuration, each from the SDK docs (py.sdk.modelcontextprotocol.io):
- Transport: Streamable HTTP from `mcp.streamable_http_app(...)`, handed to uvicorn ("Add to
  an existing app": "`app` is an ordinary ASGI application. Hand it to any ASGI server"),
  one worker, access log off; endpoint `/mcp`, as ours.
- `json_response=True`: "answer each POST with a single JSON body instead of an SSE stream"
  ("Running your server"), as our bridge answers.
- `stateless_http=True`: "a fresh transport per request, no session tracking" ("Running your
  server"); "If your tools never call back into the client, `stateless_http=True` is free and
  you should take it" ("Serving legacy clients"). Ours keeps no session either, so a client
  of either can send `tools/call` straight away with `MCP-Protocol-Version: 2025-11-25`.
- One shared HTTP client for the server's life, built in the lifespan ("Lifespan": "Most real
  servers hold something for their whole life: a database pool, an HTTP client [...] You
  don't want to build it on every call"), read in the tool as
  `ctx.request_context.lifespan_context`. The client is `httpx2.AsyncClient`, the HTTP client
  mcp 2 depends on ("`httpx2` is API-compatible with `httpx`", migration guide; mcp 2 no
  longer installs `httpx`).
- Results: the tool returns a `dict`, which the SDK sends as `structuredContent` and as JSON
  text in `content` ("Structured Output": "`dict[str, ...]` [...] isn't wrapped"): the same
  `{"ticket": ...}` shape as ours. Errors: a raised exception becomes an `isError` result
  ("Handling errors").
- No agent authentication (the docs' way is a `TokenVerifier` plus `AuthSettings`, which
  would only add work per call): the peer does less than our bridge, never more.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

#: Who the calls are made for: the bench agent, as the bridge asserts it (bench/_product.py).
ACTOR_HEADERS = {
    "X-Actor-Type": "agent",
    "X-Actor-Id": "bench-agent",
    "X-Actor-Role": "supervisor",
}


@dataclass
class AppContext:
    api: httpx2.AsyncClient


def server(api_url: str, token: str) -> MCPServer[AppContext]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[AppContext]) -> AsyncIterator[AppContext]:
        headers = {"Authorization": f"Bearer {token}", **ACTOR_HEADERS}
        async with httpx2.AsyncClient(base_url=api_url, headers=headers) as api:
            yield AppContext(api=api)

    mcp: MCPServer[AppContext] = MCPServer("dispatch-peer", lifespan=lifespan, log_level="WARNING")

    @mcp.tool(name="ticket.get", title="Read a ticket")
    async def ticket_get(ticket_id: str, ctx: Context[AppContext]) -> dict[str, Any]:
        """Read one ticket: state, priority, customer and site, assignment, attached evidence,
        `missing_fields` and the `allowed_actions` it admits now. Changes nothing."""
        api = ctx.request_context.lifespan_context.api
        resp = await api.get(f"/v1/tickets/{ticket_id}", headers={"X-Tool-Name": "ticket.get"})
        resp.raise_for_status()
        return {"ticket": resp.json()}

    @mcp.tool(name="ticket.create", title="Create a ticket")
    async def ticket_create(
        ctx: Context[AppContext],
        customer_name: str | None = None,
        contact_phone: str | None = None,
        contact_email: str | None = None,
        site_address: str | None = None,
        incident_type: str | None = None,
        priority: Literal["P1", "P2", "P3", "P4"] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Open a new field-service ticket for a customer's problem."""
        fields = {
            "customer_name": customer_name,
            "contact_phone": contact_phone,
            "contact_email": contact_email,
            "site_address": site_address,
            "incident_type": incident_type,
            "priority": priority,
            "description": description,
        }
        api = ctx.request_context.lifespan_context.api
        resp = await api.post(
            "/v1/tickets",
            json={k: v for k, v in fields.items() if v is not None},
            # dispatch-api requires an Idempotency-Key on mutations; one per call, as ours.
            headers={"X-Tool-Name": "ticket.create", "Idempotency-Key": str(uuid.uuid4())},
        )
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    return mcp


def main(port: int, api_url: str, token: str) -> None:
    app = server(api_url, token).streamable_http_app(json_response=True, stateless_http=True)
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, access_log=False, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
