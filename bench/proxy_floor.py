"""The floor for a Python hop: a minimal aiohttp forwarding proxy, for S2.

`POST /v1/tools/ticket.get/invoke` with `{"arguments": {"ticket_id": ...}}` becomes
`GET /v1/tickets/{id}` on dispatch-api with the gateway's token; the answer is wrapped the
way the bridge wraps it. No validation, retries, telemetry or auth: what any hop costs.

    python -m bench.proxy_floor PORT API_URL GATEWAY_TOKEN
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def app(api_url: str, token: str) -> web.Application:
    application = web.Application()
    headers = {"Authorization": f"Bearer {token}"}

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(api_url) as s:
            app[SESSION] = s
            yield

    async def invoke(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        path = f"/v1/tickets/{body['arguments']['ticket_id']}"
        async with request.app[SESSION].get(path, headers=headers) as resp:
            ticket = orjson.loads(await resp.read())
        return web.Response(
            body=orjson.dumps({"ok": True, "tool": "ticket.get", "result": {"ticket": ticket}}),
            content_type="application/json",
        )

    application.cleanup_ctx.append(session)
    application.router.add_post("/v1/tools/ticket.get/invoke", invoke)
    return application


if __name__ == "__main__":
    port, api_url, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    web.run_app(app(api_url, token), host="127.0.0.1", port=port, access_log=None, print=None)
