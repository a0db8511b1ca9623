"""No sticky sessions: a handshake on one bridge replica, calls on another."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bridge import create_bridge_app
from bridge._keys import SETTINGS
from testkit.api import COMPLETE_TICKET

from .conftest import Bridge


async def test_any_replica_answers_after_a_handshake_on_another(bridge: Bridge) -> None:
    other = TestServer(create_bridge_app(bridge.app[SETTINGS]), host="127.0.0.1")
    await other.start_server()
    headers = {
        "Authorization": f"Bearer {bridge.keys['supervisor']}",
        "Accept": "application/json, text/event-stream",
    }
    try:
        async with aiohttp.ClientSession(headers=headers) as http:

            async def post(server_url: str, body: dict[str, Any], **extra: str) -> Any:
                async with http.post(server_url, json=body, headers=extra) as resp:
                    assert resp.status in (200, 202), await resp.text()
                    return await resp.json() if resp.status == 200 else None

            first = str(bridge.session._base_url) + "/mcp"
            second = str(other.make_url("/mcp"))
            init = await post(
                first,
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "test", "version": "1"},
                    },
                },
            )
            version = init["result"]["protocolVersion"]
            await post(second, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            called = await post(
                second,
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "ticket.create", "arguments": COMPLETE_TICKET},
                },
                **{"MCP-Protocol-Version": version},
            )
    finally:
        await other.close()

    assert version == "2025-11-25"
    assert called["result"]["isError"] is False
    assert called["result"]["structuredContent"]["ticket"]["state"] == "READY_TO_SCHEDULE"
