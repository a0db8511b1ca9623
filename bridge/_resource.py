"""What the bridge publishes as an OAuth protected resource (RFC 9728) and how it challenges:
the metadata documents, the `WWW-Authenticate` header of every 401 (and of a 403 for a
missing scope), and the issuer's key cache, opened with the app.

One resource identifier serves REST and MCP: the audience (DISPATCH_OAUTH_AUDIENCE, default
DISPATCH_PUBLIC_URL). Both the root document and its `/mcp` path form name it, so a client
that discovers from the MCP endpoint URL asks its issuer for a token this resource accepts.
With the default, a token for `<public URL>/mcp` is accepted too: clients that do not read
the metadata take the MCP endpoint's URL as the resource (MCP authorization, RFC 8707).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from ._jwks import IssuerKeys
from ._keys import REQUIRED_SCOPE, SETTINGS, VERIFIER
from ._oauth import TokenVerifier
from ._scopes import SCOPES
from .settings import BridgeSettings

WELL_KNOWN = "/.well-known/oauth-protected-resource"
REALM = 'Bearer realm="dispatch-bridge"'


def audience(settings: BridgeSettings) -> str:
    return settings.oauth.audience or settings.public_url


def audiences(settings: BridgeSettings) -> tuple[str, ...]:
    """What a token's `aud` may name: the resource, and with the default (the public URL)
    also the MCP endpoint's URL."""
    if settings.oauth.audience:
        return (settings.oauth.audience,)
    return (settings.public_url, settings.public_url.rstrip("/") + "/mcp")


def metadata_url(settings: BridgeSettings, path: str) -> str:
    """The metadata document of the endpoint at `path` (RFC 9728 §3.1: the path form for
    /mcp, the root one for the REST API)."""
    suffix = "/mcp" if path == "/mcp" or path.startswith("/mcp/") else ""
    return settings.public_url.rstrip("/") + WELL_KNOWN + suffix


async def protected_resource(request: web.Request) -> web.Response:
    """GET /.well-known/oauth-protected-resource[/mcp]: RFC 9728 metadata; 404 when the
    bridge is not an OAuth resource server (there is nothing to publish)."""
    settings = request.app[SETTINGS]
    if not settings.oauth.enabled:
        raise web.HTTPNotFound()
    body = {
        "resource": audience(settings),
        "authorization_servers": [settings.oauth.issuer],
        "scopes_supported": list(SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_name": "dispatch-bridge",
    }
    return web.json_response(body, headers={"Cache-Control": "public, max-age=3600"})


async def challenge(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: one place sets WWW-Authenticate, whichever handler refused."""
    settings = request.app[SETTINGS]
    if response.status == 401:
        parts = [REALM]
        if request.headers.get("Authorization"):
            parts.append('error="invalid_token"')  # RFC 6750 §3.1: only when one was sent
    elif response.status == 403 and REQUIRED_SCOPE in request:
        parts = [REALM, 'error="insufficient_scope"', f'scope="{request[REQUIRED_SCOPE]}"']
    else:
        return
    if settings.oauth.enabled:
        parts.append(f'resource_metadata="{metadata_url(settings, request.path)}"')
    response.headers["WWW-Authenticate"] = ", ".join(parts)


def issuer_keys(
    clock: Callable[[], float],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: the session to the issuer and the token verifier, open while the app
    runs. Nothing is fetched here: the issuer being down must not stop the bridge starting
    (agent keys still work); keys are fetched with the first token."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        async with aiohttp.ClientSession() as session:
            keys = IssuerKeys(session, settings.oauth, clock)
            static = frozenset(a.id for a in settings.agents) if settings.static_keys else None
            app[VERIFIER] = TokenVerifier(
                keys, settings.oauth, audiences(settings), static or frozenset()
            )
            yield

    return ctx
