"""A scripted agent session over MCP, with the official client and no LLM.

It plays what an agent does in runbook RB2: completes a job, reads the `evidence_missing`
answer, attaches exactly what it names, completes again, and prints the ticket's timeline.
Run it against `make run`, from the repository root:

    .venv/bin/python examples/mcp_agent_session.py

It finds the bridge and its key in `$DISPATCH_DATA_DIR/dev-credentials.json` (default
`.dispatch/`). Tools are called by the names `tools/list` gives (`tech_complete`); the
timeline names each tool canonically (`tech.complete`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def credentials() -> dict[str, str]:
    path = Path(os.environ.get("DISPATCH_DATA_DIR", ".dispatch")) / "dev-credentials.json"
    creds: dict[str, str] = json.loads(path.read_text())
    return creds


async def main() -> None:
    creds = credentials()
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {creds['agent_key']}"})
    url = creds["bridge_url"] + "/mcp"
    async with Client(streamable_http_client(url, http_client=http)) as agent:
        print(f"connected to {url} (MCP {agent.protocol_version})")

        async def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
            result = await agent.call_tool(tool, arguments)
            body: dict[str, Any] = json.loads(result.content[0].text)
            outcome = f"isError: {body['error']['code']}" if result.is_error else "ok"
            print(f"  {tool:<18} {outcome}")
            return body

        ticket = (
            await call(
                "ticket_create",
                {
                    "customer_name": "Ada Lovelace",
                    "contact_phone": "+44 20 7946 0000",
                    "site_address": "12 Analytical Row, London",
                    "incident_type": "water_leak",
                    "priority": "P2",
                },
            )
        )["ticket"]["id"]
        await call(
            "ticket_schedule",
            {
                "ticket_id": ticket,
                "technician_id": "tech-dev-1",
                "window_start": "2030-01-09T13:00:00Z",
                "window_end": "2030-01-09T15:00:00Z",
            },
        )
        await call("ticket_dispatch", {"ticket_id": ticket})
        await call("tech_arrive", {"ticket_id": ticket})

        refused = await call("tech_complete", {"ticket_id": ticket})
        print(f"    -> {refused['error']['message']}")
        for item in refused["error"]["details"]["missing_evidence"]:
            content = f"{item['kind']} {item['tag']} for ticket {ticket}".encode()
            await call(
                "evidence_attach",
                {
                    "ticket_id": ticket,
                    "kind": item["kind"],
                    "tag": item["tag"],
                    "content_type": "image/jpeg" if item["kind"] == "photo" else "image/png",
                    "content_base64": base64.b64encode(content).decode(),
                },
            )
        done = await call("tech_complete", {"ticket_id": ticket, "reason": "leak fixed"})
        print(f"    -> ticket {ticket} is {done['ticket']['state']}")

        print("timeline:")
        timeline = await call("ticket_timeline", {"ticket_id": ticket})
        for event in timeline["events"]:
            print(
                f"  {event['seq']:>2} {event['type']:<20} {event['from_state'] or '-':>17} ->"
                f" {event['to_state']:<17} {event['actor_type']}:{event['actor_id']}"
                f" via {event['tool_name']}"
            )
    await http.aclose()


if __name__ == "__main__":
    asyncio.run(main())
