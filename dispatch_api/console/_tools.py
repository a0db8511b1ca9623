"""The tool health page: per tool calls, failure ratio and failures by code, p50/p99,
retries and calls in flight, and the breaker's state — fleet-wide from Prometheus when
DISPATCH_PROMETHEUS_URL is set, else from DISPATCH_BRIDGE_URL's /metrics, which the page
says is one replica. The figures come from telemetry.tool_health, as `dispatch-bridge tools`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from telemetry import ToolHealthError, log_context, tool_health

from ..web._keys import SETTINGS
from ._render import page

#: The console's one HTTP client (to Prometheus or the bridge), opened with the app.
HTTP = web.AppKey("console_http", aiohttp.ClientSession)
#: A page waits at most this long for its source: a slow Prometheus is said, not waited on.
SOURCE_TIMEOUT_S = 3.0


async def http_session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        yield


async def tools(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    try:
        health = await tool_health(
            request.config_dict[HTTP],
            settings.prometheus_url,
            settings.bridge_url,
            timeout_s=SOURCE_TIMEOUT_S,
        )
    except ToolHealthError as exc:
        log_context(request)["error_code"] = "tool_health_unavailable"
        return page(request, "tools.html", {"health": None, "problem": str(exc)}, 503)
    return page(request, "tools.html", {"health": health, "problem": None})
