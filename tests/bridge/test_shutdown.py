"""Graceful shutdown: stop accepting, let calls in flight finish, then close."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp import web

from bridge import create_bridge_app
from bridge._keys import SETTINGS
from testkit.api import COMPLETE_TICKET

from .conftest import Bridge


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_call_in_flight_at_shutdown_finishes_and_new_connections_are_refused(
    bridge: Bridge,
) -> None:
    app = create_bridge_app(bridge.app[SETTINGS])
    draining = asyncio.Event()

    async def mark(app: web.Application) -> None:
        draining.set()

    app.on_shutdown.append(mark)  # runs once the listener has closed
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/v1/tools/ticket.create/invoke"
    headers = {"Authorization": f"Bearer {bridge.keys['supervisor']}"}
    bridge.proxy.hold()
    async with aiohttp.ClientSession() as session:
        call = asyncio.create_task(
            session.post(url, json={"arguments": COMPLETE_TICKET}, headers=headers)
        )
        await asyncio.wait_for(bridge.proxy.holding.wait(), 5)
        stopping = asyncio.create_task(runner.cleanup())
        await asyncio.wait_for(draining.wait(), 5)

        try:
            async with aiohttp.ClientSession() as fresh:
                await fresh.get(f"http://127.0.0.1:{port}/healthz")
            refused = False
        except aiohttp.ClientConnectionError:
            refused = True
        bridge.proxy.release()
        response = await asyncio.wait_for(call, 10)
        body = await response.json()
        response.release()
        await asyncio.wait_for(stopping, 10)

    assert refused
    assert response.status == 200
    assert body["ok"] is True
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 1
