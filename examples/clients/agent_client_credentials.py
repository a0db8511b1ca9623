"""An unattended agent that signs in with OAuth 2.1 client credentials, with the official
`mcp` SDK (no LLM): it lists the tools its token's role and scopes allow.

    DISPATCH_OAUTH_ISSUER=https://issuer.example DISPATCH_CLIENT_ID=... \
    DISPATCH_CLIENT_SECRET=... python examples/clients/agent_client_credentials.py

The SDK does the discovery itself: the bridge's 401 names its protected-resource metadata
(`/.well-known/oauth-protected-resource/mcp`), which names the authorization server; the SDK
reads that server's metadata, asks its token endpoint for a token for this resource (RFC
8707 `resource`), and sends it as `Authorization: Bearer ...`, fetching a new one when it
expires. `issuer` pins the authorization server the secret may ever be sent to.
The same `auth` object works for the OpenAI Agents SDK (`params={"url": ..., "auth": auth}`)
and Pydantic AI (`MCPToolset(url, auth=auth)`).
"""

from __future__ import annotations

import asyncio
import os

import httpx2
from mcp import Client
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken


class MemoryTokens(TokenStorage):
    """Tokens for this process only: a restarted agent simply asks for a new one."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def main() -> None:
    url = os.environ.get("DISPATCH_BRIDGE_URL", "http://localhost:8080") + "/mcp"
    auth = ClientCredentialsOAuthProvider(
        server_url=url,
        storage=MemoryTokens(),
        client_id=os.environ["DISPATCH_CLIENT_ID"],
        client_secret=os.environ["DISPATCH_CLIENT_SECRET"],
        issuer=os.environ["DISPATCH_OAUTH_ISSUER"],
        scope=os.environ.get("DISPATCH_SCOPES"),  # None: the issuer's default scopes
    )
    async with (
        httpx2.AsyncClient(auth=auth) as http,
        Client(streamable_http_client(url, http_client=http)) as agent,
    ):
        tools = (await agent.list_tools()).tools
        print(f"{len(tools)} tools:", ", ".join(t.title or t.name for t in tools))


if __name__ == "__main__":
    asyncio.run(main())
