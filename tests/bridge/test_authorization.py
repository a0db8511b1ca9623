"""Who may do what: every tool for every role, credentials on every route, technicians on
their own tickets, no asserted actors from agents, keys kept hashed and out of every log and
trace, and the per-key rate limit under a concurrent burst."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import orjson
import pytest
from aiohttp import hdrs, web
from multidict import CIMultiDict
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge._keys import AGENTS as AGENT_DIRECTORY
from bridge._keys import SETTINGS
from dispatch_api.settings import ApiSettings
from dispatch_api.store import connect
from telemetry import JsonFormatter
from testkit.api import COMPLETE_TICKET, WINDOW, Api, Reply
from testkit.approvals import without_approvals
from tools import Tool, catalog

from .conftest import AGENTS, Bridge


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    # Not about approvals: gated tools (ticket.cancel, the emergency dispatch) run straight
    # through here; tests/dispatch_api/test_approvals*.py cover the gate.
    return without_approvals(api_settings)


TOOLS = catalog()
ROLES = list(AGENTS)
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
#: Routes anyone may call: probes, the scrape, and the API documents (they hold no secret,
#: and are the same files the package ships).
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
#: Public too, and routed always, but with OAuth off (as here) there is nothing to discover:
#: 404 with or without credentials (tests/bridge/test_oauth_e2e.py serves them with it on).
DISCOVERY = {"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"}
#: A value for each path parameter either service has.
PATH_VALUES = {
    "{name}": "ticket.get",
    "{ticket_id}": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "{evidence_id}": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    "{technician_id}": "tech-1",
    "{approval_id}": "5f0c8d7e-7a4b-4c59-9b0e-3f1d2c4b5a69",
}


def example_arguments(tool: Tool, ticket_id: str) -> dict[str, Any]:
    """The tool's first schema example, about `ticket_id`, keeping it assigned to tech-1."""
    arguments: dict[str, Any] = dict(tool.input_schema["examples"][0])
    if "ticket_id" in arguments:
        arguments["ticket_id"] = ticket_id
    if "technician_id" in arguments:
        arguments["technician_id"] = "tech-1"
    return arguments


async def mcp(bridge: Bridge, method: str, params: dict[str, Any], as_: str) -> Reply:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    return await bridge.request("POST", "/mcp", data=body, headers=MCP_HEADERS, as_=as_)


def mcp_error_code(reply: Reply) -> str | None:
    """The tool error code of a tools/call answer, None when the call succeeded."""
    assert reply.status == 200, reply.raw
    result = reply.body["result"]
    if not result["isError"]:
        return None
    code: str = orjson.loads(result["content"][0]["text"])["error"]["code"]
    return code


async def listed(bridge: Bridge, role: str) -> dict[str, set[str]]:
    """The tool names each listing shows `role`: REST in every format, and MCP tools/list."""
    names = {}
    for fmt in ("mcp", "openai", "anthropic"):
        reply = await bridge.request("GET", f"/v1/tools?format={fmt}", as_=role)
        assert reply.status == 200, reply.body
        tools = reply.body["tools"]
        names[fmt] = {t["function"]["name"] if fmt == "openai" else t["name"] for t in tools}
    reply = await mcp(bridge, "tools/list", {}, role)
    names["tools/list"] = {t["name"] for t in reply.body["result"]["tools"]}
    return names


async def assigned_ticket(api: Api) -> str:
    """A ticket scheduled for tech-1, the technician agent."""
    ticket = await api.create_ticket()
    reply = await api.act(ticket["id"], "schedule", WINDOW)
    assert reply.status == 200, reply.body
    return str(ticket["id"])


@pytest.mark.parametrize("role", ROLES)
async def test_every_tool_for_every_role_is_listed_and_callable_exactly_when_allowed(
    bridge: Bridge, role: str
) -> None:
    ticket_id = await assigned_ticket(bridge.api)
    shown = await listed(bridge, role)

    for tool in TOOLS:
        arguments = example_arguments(tool, ticket_id)
        forwarded = bridge.proxy.requests
        rest = await bridge.invoke(tool.name, arguments, as_=role)
        alias = await bridge.invoke(tool.alias, arguments, as_=role)
        over_mcp = await mcp(
            bridge, "tools/call", {"name": tool.name, "arguments": arguments}, role
        )
        codes = [
            None if rest.body["ok"] else rest.body["error"]["code"],
            None if alias.body["ok"] else alias.body["error"]["code"],
            mcp_error_code(over_mcp),
        ]
        where = f"{role} {tool.name}: {codes}"
        if tool.allowed(role):
            assert tool.alias in shown["mcp"], where  # MCP lists the safe name by default
            assert tool.alias in shown["tools/list"], where
            assert tool.alias in shown["openai"] & shown["anthropic"], where
            # Business outcomes (invalid_transition, evidence_missing ...) are fine; being
            # refused for the role, or for arguments taken from the tool's own example, is not.
            assert not {"forbidden", "invalid_arguments", "unknown_tool"} & set(codes), where
        else:
            assert tool.alias not in shown["mcp"] | shown["tools/list"], where
            assert tool.alias not in shown["openai"] | shown["anthropic"], where
            assert codes == ["forbidden"] * 3, where
            assert (rest.status, alias.status) == (403, 403), where
            assert bridge.proxy.requests == forwarded, f"{where}: reached dispatch-api"
    assert len(shown["mcp"]) == sum(t.allowed(role) for t in TOOLS)


def routes(app: web.Application) -> list[tuple[str, str]]:
    """The routes a bearer credential guards: every one but the console's, whose pages a
    person reaches with a session cookie (tests/dispatch_api/console/test_security.py
    checks each of those needs a session)."""
    found = []
    for route in app.router.routes():
        assert route.resource is not None
        if not route.resource.canonical.startswith("/console"):
            found.append((route.method, route.resource.canonical))
    return found


def concrete(template: str) -> str:
    for parameter, value in PATH_VALUES.items():
        template = template.replace(parameter, value)
    assert "{" not in template, template
    return template


async def test_every_route_but_probes_metrics_and_documents_needs_credentials(
    bridge: Bridge,
) -> None:
    checked = []
    for service, app, session in (
        ("bridge", bridge.app, bridge.session),
        ("api", bridge.api.app, bridge.api.session),
    ):
        assert app is not None
        for method, template in routes(app):
            path = concrete(template)
            for credentials in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "x"}):
                async with session.request(method, path, headers=credentials) as resp:
                    status, challenge = resp.status, resp.headers.get("WWW-Authenticate", "")
                where = f"{service} {method} {template} {credentials}"
                if template in PUBLIC:
                    assert status == 200, where
                elif template in DISCOVERY:
                    assert status == 404, where
                else:
                    assert status == 401, where
                    assert challenge.startswith("Bearer realm="), where
            checked.append((service, method, template))
    # Both routers were really enumerated, HEAD variants included.
    assert ("bridge", hdrs.METH_POST, "/mcp") in checked
    assert ("api", hdrs.METH_HEAD, "/v1/tickets/{ticket_id}/timeline") in checked


async def test_every_authenticated_route_refuses_two_authorization_headers_with_400(
    bridge: Bridge,
) -> None:
    # Both copies valid: whichever one a proxy or the parser would pick, the request is
    # ambiguous, and it is refused before it does anything.
    checked = []
    for service, app, session, key in (
        ("bridge", bridge.app, bridge.session, bridge.keys["supervisor"]),
        ("api", bridge.api.app, bridge.api.session, bridge.api.tokens["supervisor"]),
    ):
        assert app is not None
        twice = CIMultiDict([("Authorization", f"Bearer {key}")] * 2)
        twice.update(MCP_HEADERS)
        twice["Idempotency-Key"] = "dup-auth-1"
        for method, template in routes(app):
            if template in PUBLIC | DISCOVERY:
                continue
            body = orjson.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                if template == "/mcp"
                else {"arguments": {}}
                if service == "bridge"
                else COMPLETE_TICKET
            )
            async with session.request(method, concrete(template), data=body, headers=twice) as r:
                status = r.status
            assert status == 400, f"{service} {method} {template}"
            checked.append((service, method, template))
    assert ("bridge", hdrs.METH_POST, "/mcp") in checked
    assert ("bridge", hdrs.METH_POST, "/v1/tools/{name}/invoke") in checked
    assert ("api", hdrs.METH_POST, "/v1/tickets") in checked
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 0
    assert bridge.proxy.requests == 0


@pytest.mark.parametrize("header", ["X-Correlation-ID", "X-Request-ID", "Idempotency-Key"])
async def test_a_repeated_id_header_is_refused_with_400_by_both_services(
    bridge: Bridge, header: str
) -> None:
    sent = CIMultiDict([(header, "id-one"), (header, "id-two")])
    via_bridge = [
        await bridge.session.post(
            "/v1/tools/ticket.create/invoke",
            json={"arguments": COMPLETE_TICKET},
            headers=CIMultiDict(sent, Authorization=f"Bearer {bridge.keys['supervisor']}"),
        ),
        await bridge.session.get(
            "/v1/tools",
            headers=CIMultiDict(sent, Authorization=f"Bearer {bridge.keys['supervisor']}"),
        ),
    ]
    api_headers = CIMultiDict(sent, Authorization=f"Bearer {bridge.api.tokens['supervisor']}")
    if header != "Idempotency-Key":
        api_headers["Idempotency-Key"] = "k-1"
    direct = await bridge.api.session.post("/v1/tickets", json=COMPLETE_TICKET, headers=api_headers)

    for reply in (*via_bridge, direct):
        assert reply.status == 400, (reply.url, await reply.text())
        reply.release()
    assert await bridge.api.count("SELECT count(*) FROM tickets") == 0


async def test_a_technician_agent_acts_only_on_tickets_assigned_to_it(bridge: Bridge) -> None:
    mine = await assigned_ticket(bridge.api)
    theirs = (await bridge.api.create_ticket())["id"]
    await bridge.api.act(theirs, "schedule", {**WINDOW, "technician_id": "tech-2"})
    for ticket_id in (mine, theirs):
        await bridge.api.act(ticket_id, "dispatch")

    refused = [
        await bridge.invoke(tool, {"ticket_id": theirs}, as_="technician")
        for tool in ("ticket.get", "ticket.timeline", "tech.arrive")
    ]
    over_mcp = await mcp(
        bridge,
        "tools/call",
        {"name": "tech.arrive", "arguments": {"ticket_id": theirs}},
        "technician",
    )
    arrived = await bridge.invoke("tech.arrive", {"ticket_id": mine}, as_="technician")
    queue = await bridge.invoke("queue.view", {}, as_="technician")

    # As for a ticket that does not exist: others' tickets are not disclosed.
    assert [(r.status, r.body["error"]["code"]) for r in refused] == [(404, "not_found")] * 3
    assert mcp_error_code(over_mcp) == "not_found"
    assert arrived.body["result"]["ticket"]["state"] == "ON_SITE"
    assert [t["id"] for t in queue.body["result"]["items"]] == [mine]
    other = await bridge.api.request("GET", f"/v1/tickets/{theirs}")
    assert other.body["state"] == "DISPATCHED"  # untouched


#: What an agent might send to pass itself off as someone else.
FORGED_ACTOR = {
    "X-Actor-Type": "human",
    "X-Actor-Id": "sup-1",
    "X-Actor-Role": "supervisor",
    "X-Tool-Name": "ticket.cancel",
}


async def test_an_agent_cannot_assert_another_actor_through_the_bridge(bridge: Bridge) -> None:
    # dispatch-api refuses actor headers from anyone but the gateway (tests/dispatch_api/
    # test_auth.py); here the agent sends them to the bridge, which must not pass them on.
    created = await bridge.invoke(
        "ticket.create", COMPLETE_TICKET, as_="dispatcher", headers=FORGED_ACTOR
    )
    ticket_id = created.body["result"]["ticket"]["id"]
    escalated = await bridge.invoke(
        "ticket.cancel",
        {"ticket_id": ticket_id, "reason": "x"},
        as_="technician",
        headers=FORGED_ACTOR,
    )
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "ticket.get", "arguments": {"ticket_id": ticket_id}},
    }
    over_mcp = await bridge.request(
        "POST",
        "/mcp",
        data=orjson.dumps(body),
        headers={**MCP_HEADERS, **FORGED_ACTOR},
        as_="technician",
    )

    [event] = await bridge.api.timeline(ticket_id)
    assert (event["actor_type"], event["actor_id"], event["role"], event["tool_name"]) == (
        "agent",
        "agent-disp",
        "dispatcher",
        "ticket.create",
    )
    assert escalated.body["error"]["code"] == "forbidden"
    assert mcp_error_code(over_mcp) == "not_found"  # not assigned to tech-1, whatever it claims


async def test_keys_and_tokens_are_kept_only_as_sha256_digests(bridge: Bridge) -> None:
    settings = bridge.app[SETTINGS]
    directory = bridge.app[AGENT_DIRECTORY]
    stored = await principal_rows(bridge.api)

    for key in bridge.keys.values():
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert digest in {a.key_sha256 for a in settings.agents}
        assert key not in repr(settings)
        assert key not in repr(vars(directory))  # it holds digests only
    for name, token in bridge.api.tokens.items():
        assert token not in stored, name
        assert hashlib.sha256(token.encode()).hexdigest() in stored, name


async def principal_rows(api: Api) -> str:
    """Every principal row as text, its token digest in hex too."""
    conn = await connect(api.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM principals")
    finally:
        await conn.close()
    return " ".join(str(dict(r)) + " " + bytes(r["token_sha256"]).hex() for r in rows)


async def test_no_key_or_token_reaches_a_span_or_an_error(
    bridge: Bridge, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    secrets = [*bridge.keys.values(), *bridge.api.tokens.values()]
    ticket_id = await assigned_ticket(bridge.api)
    await bridge.invoke("ticket.get", {"ticket_id": ticket_id})
    await mcp(
        bridge,
        "tools/call",
        {"name": "ticket.get", "arguments": {"ticket_id": ticket_id}},
        "dispatcher",
    )
    wrong = await bridge.invoke(
        "ticket.get",
        {"ticket_id": ticket_id},
        as_="",
        headers={"Authorization": "Bearer not-a-real-key-7f3a"},
    )
    # A key followed by a byte the HTTP parser refuses: aiohttp logs the raw header line.
    key = bridge.keys["supervisor"]
    assert bridge.session._base_url is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.session._base_url.port)
    writer.write(
        f"GET /v1/tools HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {key}".encode()
        + b"\x00\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    refused = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    assert refused.startswith(b"HTTP/1.0 400") or refused.startswith(b"HTTP/1.1 400")
    assert "not-a-real-key-7f3a" not in wrong.raw.decode()
    exported = [
        orjson.dumps(
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "events": [dict(e.attributes or {}) for e in s.events],
            },
            default=str,
        ).decode()
        for s in spans.get_finished_spans()
    ]
    assert exported
    assert not [s for s in secrets if any(s in line for line in exported)]
    written = [JsonFormatter("bridge").format(record) for record in caplog.records]
    assert any("Invalid header value char" in line for line in written)
    assert not [s for s in secrets if any(s in line for line in written)]


@pytest.mark.parametrize("bridge_overrides", [{"rate_limit_per_s": 1.0, "rate_limit_burst": 10}])
async def test_a_concurrent_burst_gets_exactly_the_burst_and_other_keys_are_unaffected(
    bridge: Bridge,
) -> None:
    started = time.monotonic()
    replies = await asyncio.wait_for(
        asyncio.gather(*(bridge.invoke("sla.status", {}) for _ in range(30))), 30
    )
    elapsed = time.monotonic() - started
    over_mcp = await mcp(
        bridge, "tools/call", {"name": "sla.status", "arguments": {}}, "supervisor"
    )
    other = await bridge.invoke("sla.status", {}, as_="dispatcher")

    ok = [r for r in replies if r.status == 200]
    limited = [r for r in replies if r.status == 429]
    # The bucket holds 10 and refills 1 per second: 10, plus what refilled during the burst.
    assert 10 <= len(ok) <= 10 + int(elapsed * 1.0)
    assert len(ok) + len(limited) == 30
    for reply in limited:
        error = reply.body["error"]
        assert (error["code"], error["retryable"]) == ("rate_limited", True)
        assert 0 < error["retry_after_ms"] <= 1000
        assert reply.headers["Retry-After"] == "1"
    assert mcp_error_code(over_mcp) == "rate_limited"  # one bucket per key, whatever transport
    assert other.status == 200
