"""The bridge as an OAuth 2.1 resource server, end to end: a real authorization server
(oauth2-mock-server on node, testkit/issuer.py) issues the tokens; the bridge, in front of a
real dispatch-api on real PostgreSQL, accepts or refuses them. No test signs a token."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from bridge import create_bridge_app
from bridge._oauth_settings import OAuthSettings
from bridge.settings import BridgeSettings
from settings import Secret
from testkit.api import COMPLETE_TICKET, Api, Reply
from testkit.issuer import Client, Issuer
from testkit.processes import free_port

from .conftest import Bridge

PUBLIC_URL = "http://bridge.test"
EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples" / "clients" / "agent_client_credentials.py"
)
BOTH = ("dispatch:read", "dispatch:write")
CLIENTS = {
    "fleet-dispatcher": Client("secret-1", "dispatcher", BOTH),
    "fleet-reader": Client("secret-2", "dispatcher", ("dispatch:read",)),
    "fleet-expired": Client("secret-3", "dispatcher", BOTH, ttl_s=-600),
}
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
METADATA = f'resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource"'
MCP_METADATA = f'resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"'


async def start_issuer() -> Issuer:
    try:
        return await Issuer.start(CLIENTS)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    issuer = await start_issuer()
    try:
        yield issuer
    finally:
        await issuer.close()


@pytest.fixture
def bridge_overrides(issuer: Issuer) -> dict[str, Any]:
    # Refetch on every unknown kid: the bound on refetches has its own test
    # (test_oauth_tokens.py); here a rotation must be seen at once.
    return {"public_url": PUBLIC_URL, "oauth": OAuthSettings(issuer=issuer.url, jwks_refetch_s=0)}


async def token(issuer: Issuer, client: str = "fleet-dispatcher", **kw: Any) -> str:
    kw.setdefault("scope", " ".join(BOTH))
    kw.setdefault("resource", PUBLIC_URL)
    return await issuer.token(client, CLIENTS[client].secret, **kw)


async def invoke(bridge: Bridge, bearer: str, tool: str, arguments: Any) -> Reply:
    return await bridge.request(
        "POST",
        f"/v1/tools/{tool}/invoke",
        json={"arguments": arguments},
        as_="",
        headers={"Authorization": f"Bearer {bearer}"},
    )


async def mcp(bridge: Bridge, bearer: str, method: str, params: dict[str, Any]) -> Reply:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return await bridge.request(
        "POST",
        "/mcp",
        data=orjson.dumps(body),
        as_="",
        headers={**MCP_HEADERS, "Authorization": f"Bearer {bearer}"},
    )


async def tickets(bridge: Bridge) -> int:
    return await bridge.api.count("SELECT count(*) FROM tickets")


def assert_refused(reply: Reply, *, says: str, metadata: str = METADATA) -> None:
    """401 unauthenticated, naming what is wrong, pointing at the metadata, small."""
    assert reply.status == 401, reply.raw
    assert reply.body["error"]["code"] == "unauthenticated"
    assert says in reply.body["error"]["message"]
    challenge = reply.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="dispatch-bridge", error="invalid_token"')
    assert metadata in challenge
    assert len(reply.raw) < 1500


async def test_a_client_credentials_token_calls_a_tool_as_its_client_without_being_forwarded(
    bridge: Bridge, issuer: Issuer
) -> None:
    bearer = await token(issuer)
    for_the_mcp_endpoint = await token(issuer, resource=f"{PUBLIC_URL}/mcp")

    created = await invoke(bridge, bearer, "ticket.create", COMPLETE_TICKET)
    listed = await mcp(bridge, for_the_mcp_endpoint, "tools/list", {})

    assert created.status == 200, created.raw
    assert listed.status == 200  # the MCP endpoint's URL as resource names this bridge too
    ticket_id = created.body["result"]["ticket"]["id"]
    [event] = await bridge.api.timeline(ticket_id)
    assert (event["actor_type"], event["actor_id"], event["role"]) == (
        "agent",
        "fleet-dispatcher",
        "dispatcher",
    )
    # dispatch-api saw the bridge's gateway principal (its idempotency record is keyed by
    # the caller), never the agent's token: no token passthrough.
    principal = await bridge.api.count(
        "SELECT count(*) FROM idempotency_keys WHERE key = $1 AND principal_id = 'bridge'",
        created.body["request_id"],
    )
    assert principal == 1


async def test_over_mcp_a_token_lists_and_calls_only_the_tools_of_its_scopes(
    bridge: Bridge, issuer: Issuer
) -> None:
    full = await token(issuer)
    reader = await token(issuer, "fleet-reader")
    before = await tickets(bridge)

    initialized = await mcp(bridge, full, "initialize", {"protocolVersion": "2025-11-25"})
    all_tools = await mcp(bridge, full, "tools/list", {})
    read_tools = await mcp(bridge, reader, "tools/list", {})
    refused = await mcp(
        bridge, reader, "tools/call", {"name": "ticket.create", "arguments": COMPLETE_TICKET}
    )

    extensions = initialized.body["result"]["capabilities"]["extensions"]
    assert "io.modelcontextprotocol/oauth-client-credentials" in extensions
    listed = {t["title"] for t in read_tools.body["result"]["tools"]}  # the dotted names
    everything = {t["title"] for t in all_tools.body["result"]["tools"]}
    assert listed == {
        "ticket.get",
        "ticket.timeline",
        "queue.view",
        "technician.list",
        "sla.status",
        "approval.status",
    }
    assert "ticket.create" in everything
    assert listed < everything
    assert refused.status == 403
    assert refused.body["error"]["data"] == {"required_scope": "dispatch:write"}
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="dispatch-bridge", error="insufficient_scope",'
        f' scope="dispatch:read dispatch:write", {MCP_METADATA}'
    )
    assert await tickets(bridge) == before


async def test_a_rest_call_lacking_its_scope_is_forbidden_with_a_step_up_challenge(
    bridge: Bridge, issuer: Issuer
) -> None:
    reader = await token(issuer, "fleet-reader")
    before = await tickets(bridge)

    refused = await invoke(bridge, reader, "ticket.create", COMPLETE_TICKET)

    assert refused.status == 403
    assert refused.body["error"]["code"] == "forbidden"
    assert "dispatch:write" in refused.body["error"]["message"]
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="dispatch-bridge", error="insufficient_scope",'
        f' scope="dispatch:read dispatch:write", {METADATA}'
    )
    assert await tickets(bridge) == before


async def test_an_expired_token_is_refused(bridge: Bridge, issuer: Issuer) -> None:
    expired = await token(issuer, "fleet-expired")
    before = await tickets(bridge)

    reply = await invoke(bridge, expired, "ticket.create", COMPLETE_TICKET)

    assert_refused(reply, says="it has expired")
    assert await tickets(bridge) == before


async def test_a_token_for_another_audience_is_refused(bridge: Bridge, issuer: Issuer) -> None:
    elsewhere = await token(issuer, resource="https://other-api.example")
    unbound = await token(issuer, resource=None)  # no RFC 8707 resource: no aud at all

    wrong = await invoke(bridge, elsewhere, "ticket.create", COMPLETE_TICKET)
    missing = await invoke(bridge, unbound, "ticket.create", COMPLETE_TICKET)

    assert_refused(wrong, says=f"its audience (aud) must be {PUBLIC_URL}")
    assert_refused(missing, says="it has no aud claim")
    assert await tickets(bridge) == 0


async def test_a_token_from_another_issuer_is_refused(bridge: Bridge, issuer: Issuer) -> None:
    other = await start_issuer()
    try:
        foreign = await other.token("fleet-dispatcher", "secret-1", scope="dispatch:write")
    finally:
        await other.close()

    reply = await mcp(
        bridge, foreign, "tools/call", {"name": "ticket.create", "arguments": COMPLETE_TICKET}
    )

    assert reply.status == 401
    assert f"it was issued by {other.url!r}, not by {issuer.url}" in reply.body["error"]["message"]
    assert MCP_METADATA in reply.headers["WWW-Authenticate"]
    assert await tickets(bridge) == 0


async def test_a_rotated_key_verifies_and_a_retired_key_no_longer_does(
    bridge: Bridge, issuer: Issuer
) -> None:
    old = await token(issuer)
    assert (await invoke(bridge, old, "queue.view", {})).status == 200  # keys now cached

    await issuer.rotate()
    new = await token(issuer)
    after_rotation = await invoke(bridge, new, "queue.view", {})
    old_during_overlap = await invoke(bridge, old, "queue.view", {})
    await issuer.retire()
    # The bridge learns that a key is gone when it next fetches the keys: at the latest
    # DISPATCH_OAUTH_JWKS_MAX_AGE_S after the last fetch, or, as here, when a token names a
    # key it has not seen (the issuer rotated again).
    await issuer.rotate()
    newest = await token(issuer)
    newest_reply = await invoke(bridge, newest, "queue.view", {})
    old_after_retirement = await invoke(bridge, old, "queue.view", {})
    new_after_retirement = await invoke(bridge, new, "queue.view", {})

    assert after_rotation.status == 200, after_rotation.raw
    assert old_during_overlap.status == 200
    assert newest_reply.status == 200
    assert_refused(old_after_retirement, says="is not one of the issuer's keys")
    assert new_after_retirement.status == 200


async def test_an_unsigned_alg_none_token_is_refused(
    bridge: Bridge, issuer: Issuer, log_lines: list[bytes]
) -> None:
    # A real token with its header swapped for alg none and its signature dropped.
    _, payload, _ = (await token(issuer)).split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()

    reply = await invoke(bridge, f"{header}.{payload}.", "ticket.create", COMPLETE_TICKET)

    assert_refused(reply, says="its algorithm 'none' is not accepted")
    assert await tickets(bridge) == 0
    assert log_lines
    assert all(payload[:40].encode() not in line and len(line) < 4096 for line in log_lines)


async def test_the_protected_resource_metadata_names_the_issuer_and_the_scopes(
    bridge: Bridge, issuer: Issuer
) -> None:
    unauthenticated = await bridge.request("GET", "/v1/tools", as_="")
    documents = [
        await bridge.request("GET", path, as_="")
        for path in (
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp",
        )
    ]

    for document in documents:
        assert document.status == 200
        assert document.body == {
            "resource": PUBLIC_URL,
            "authorization_servers": [issuer.url],
            "scopes_supported": ["dispatch:read", "dispatch:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "dispatch-bridge",
        }
    assert unauthenticated.status == 401
    # No credential sent: no error code (RFC 6750 §3.1), only where to learn how.
    assert unauthenticated.headers["WWW-Authenticate"] == (
        f'Bearer realm="dispatch-bridge", {METADATA}'
    )


class TestStaticKeysOff:
    @pytest.fixture
    def bridge_overrides(self, issuer: Issuer) -> dict[str, Any]:
        return {
            "public_url": PUBLIC_URL,
            "static_keys": False,
            "oauth": OAuthSettings(issuer=issuer.url),
        }

    async def test_agent_keys_are_refused_and_tokens_still_work(
        self, bridge: Bridge, issuer: Issuer
    ) -> None:
        by_key = await bridge.invoke("queue.view", {}, as_="supervisor")
        by_token = await invoke(bridge, await token(issuer), "queue.view", {})

        assert by_key.status == 401
        assert by_key.body["error"]["code"] == "unauthenticated"
        assert by_token.status == 200


class TestOAuthOff:
    @pytest.fixture
    def bridge_overrides(self) -> dict[str, Any]:
        return {}

    async def test_tokens_are_refused_no_metadata_is_published_and_keys_still_work(
        self, bridge: Bridge, issuer: Issuer
    ) -> None:
        by_token = await invoke(bridge, await token(issuer), "queue.view", {})
        metadata = await bridge.request("GET", "/.well-known/oauth-protected-resource", as_="")
        initialized = await bridge.request(
            "POST",
            "/mcp",
            data=orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
            headers=MCP_HEADERS,
        )
        by_key = await bridge.invoke("queue.view", {}, as_="supervisor")

        assert by_token.status == 401
        assert by_token.headers["WWW-Authenticate"] == (
            'Bearer realm="dispatch-bridge", error="invalid_token"'
        )
        assert metadata.status == 404
        assert "extensions" not in initialized.body["result"]["capabilities"]
        assert by_key.status == 200


async def test_the_official_sdk_client_credentials_example_finds_the_issuer_and_lists_tools(
    api: Api, issuer: Issuer
) -> None:
    # examples/clients/agent_client_credentials.py as a user runs it: the official `mcp`
    # SDK reads the 401's resource_metadata, the metadata's authorization server, asks the
    # real issuer for a token for this resource, and lists the tools. The public URL must
    # be the real one here, so the bridge listens on a port chosen up front.
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    settings = BridgeSettings(
        api_url=api.url,
        gateway_token=Secret(api.tokens["gateway"]),
        public_url=public,
        static_keys=False,
        oauth=OAuthSettings(issuer=issuer.url),
    )
    server = TestServer(create_bridge_app(settings), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            env={
                **os.environ,
                "DISPATCH_BRIDGE_URL": public,
                "DISPATCH_OAUTH_ISSUER": issuer.url,
                "DISPATCH_CLIENT_ID": "fleet-reader",
                "DISPATCH_CLIENT_SECRET": CLIENTS["fleet-reader"].secret,
                "DISPATCH_SCOPES": "dispatch:read",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        await server.close()

    assert process.returncode == 0, err.decode()[-2000:]
    # A dispatcher holding dispatch:read: the tools that only read, approval.status among them.
    assert out.decode().startswith("6 tools:"), out
    assert "approval.status" in out.decode()
