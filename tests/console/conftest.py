"""The console in a real browser: dispatch-api (console included) and the bridge served over
loopback on the test's own PostgreSQL database, and Debian's Chromium driving the pages.

One browser for the whole session (starting Chromium is the slow part); a fresh browser
context — no cookies, no cache — for every test.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bridge import create_bridge_app
from bridge.settings import BridgeSettings
from dispatch_api.settings import ApiSettings
from settings import Secret
from telemetry import JsonLog
from testkit.api import Api
from testkit.browser import Watch, launch
from testkit.processes import free_port

#: The agent whose calls the tests send through the bridge (a dispatcher, as AGENT in the
#: approvals tests: ticket.cancel is gated for it by the default policy).
AGENT_ID = "agent-disp"
AGENT_KEY = "agent-key-console-0123456789"


@dataclass
class Console:
    """The running product: `url` is the console's root (ends with /console/)."""

    api: Api
    url: str
    bridge_url: str
    http: aiohttp.ClientSession

    def at(self, path: str) -> str:
        return self.url + path.lstrip("/")

    async def invoke(
        self, tool: str, arguments: dict[str, Any], tool_call_id: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One REST tool call as the agent: (HTTP status, envelope)."""
        body: dict[str, Any] = {"arguments": arguments}
        if tool_call_id is not None:
            body["tool_call_id"] = tool_call_id
        async with self.http.post(
            f"{self.bridge_url}/v1/tools/{tool}/invoke",
            json=body,
            headers={"Authorization": f"Bearer {AGENT_KEY}"},
        ) as resp:
            envelope: dict[str, Any] = await resp.json(content_type=None)
            return resp.status, envelope


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def bridge_port() -> int:
    """Chosen before dispatch-api starts: its tool page reads this bridge's /metrics."""
    return free_port()


@pytest.fixture
def api_settings(bridge_port: int) -> ApiSettings:
    # As testkit.api's, plus the bridge the console's tool page reads.
    return ApiSettings(
        db_pool_min=1,
        db_pool_max=8,
        db_lock_timeout_ms=1000,
        metrics_refresh_s=0,
        bridge_url=f"http://127.0.0.1:{bridge_port}",
    )


@pytest.fixture
async def console(api: Api, log_lines: list[bytes], bridge_port: int) -> AsyncIterator[Console]:
    digest = hashlib.sha256(AGENT_KEY.encode()).hexdigest()
    settings = BridgeSettings(
        api_url=api.url.rstrip("/"),
        gateway_token=Secret(api.tokens["gateway"]),
        agent_keys=(f"{AGENT_ID}:dispatcher:{digest}",),
    )
    app = create_bridge_app(settings, log=JsonLog("bridge", sink=log_lines.append))
    server = TestServer(app, host="127.0.0.1", port=bridge_port)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            bridge_url = str(server.make_url("")).rstrip("/")
            yield Console(api, api.url.rstrip("/") + "/console/", bridge_url, http)
    finally:
        await server.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context()
    # Bounded waits: a console page that never comes fails the test in seconds, not minutes.
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture
def watch(page: Page) -> Watch:
    return Watch.on(page)
