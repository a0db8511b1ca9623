"""The bridge served over real HTTP, in front of a real dispatch-api on real PostgreSQL,
with a fault proxy between the two."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge import create_bridge_app
from bridge.settings import BridgeSettings
from dispatch_client import RetryConfig, RetryPolicy
from schemas import Validator
from settings import Secret
from telemetry import JsonLog
from testkit.api import Api, Reply
from testkit.fault_proxy import FaultProxy
from tools import catalog

#: role -> (agent id, role); the technician agent acts as technician tech-1.
AGENTS = {
    "supervisor": ("agent-sup", "supervisor"),
    "dispatcher": ("agent-disp", "dispatcher"),
    "technician": ("tech-1", "technician"),
}
OUTPUT_SCHEMAS = {t.name: t.output_schema for t in catalog()}
FAST_RETRIES = RetryConfig(
    default=RetryPolicy(
        max_attempts=3,
        per_try_timeout_s=2.0,
        deadline_s=5.0,
        base_backoff_s=0.01,
        max_backoff_s=0.05,
    )
)


@dataclass
class Bridge:
    session: aiohttp.ClientSession
    api: Api
    proxy: FaultProxy
    app: web.Application
    keys: dict[str, str] = field(default_factory=dict)

    async def invoke(
        self,
        tool: str,
        arguments: Any,
        *,
        as_: str = "supervisor",
        tool_call_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One REST invocation; a successful result is checked against the tool's output
        schema, so every end-to-end test also proves the handlers honour their contract."""
        body: dict[str, Any] = {"arguments": arguments}
        if tool_call_id is not None:
            body["tool_call_id"] = tool_call_id
        reply = await self.request(
            "POST", f"/v1/tools/{tool}/invoke", json=body, as_=as_, headers=headers
        )
        if reply.status == 200 and reply.body["ok"]:
            Validator(OUTPUT_SCHEMAS[reply.body["tool"]]).validate(reply.body["result"])
        return reply

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        as_: str = "supervisor",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = {"Authorization": f"Bearer {self.keys[as_]}"} if as_ else {}
        sent.update(headers or {})
        async with self.session.request(method, path, json=json, data=data, headers=sent) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            parsed = await resp.json(content_type=None) if "json" in ctype and raw else None
            return Reply(resp.status, resp.headers, parsed, raw)


@pytest.fixture
def bridge_retry() -> RetryConfig:
    return FAST_RETRIES


@pytest.fixture
def bridge_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def bridge(
    api: Api, bridge_retry: RetryConfig, bridge_overrides: dict[str, Any], log_lines: list[bytes]
) -> AsyncIterator[Bridge]:
    assert api.session._base_url is not None
    upstream = api.session._base_url
    proxy = FaultProxy(upstream.host or "127.0.0.1", upstream.port or 80)
    await proxy.start()
    keys = {role: f"agent-key-{role}-0123456789" for role in AGENTS}
    settings = BridgeSettings(
        api_url=proxy.url,
        gateway_token=Secret(api.tokens["gateway"]),
        agent_keys=tuple(
            f"{aid}:{role}:{hashlib.sha256(keys[name].encode()).hexdigest()}"
            for name, (aid, role) in AGENTS.items()
        ),
        retry=bridge_retry,
        **bridge_overrides,
    )
    app = create_bridge_app(settings, log=JsonLog("bridge", sink=log_lines.append))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(base_url=str(server.make_url(""))) as session:
            yield Bridge(session, api, proxy, app, keys)
    finally:
        await server.close()
        await proxy.close()
