"""What both transports (REST and MCP) do to a request before any tool runs: the correlation
id, the agent's key or OAuth token, the token's scope, the key's rate limit, and reading the
body.

A request the edge cannot take as sent raises `RefusedRequest`, which carries its own HTTP
status (400, 413, 415); REST answers it as an `invalid_arguments` envelope or problem, MCP as
a JSON-RPC error. Everything else the edge refuses is a `ToolError`, whose status follows
from its code (tools.HTTP_STATUS). This is also the one place aiohttp's payload errors are
translated: none may surface as a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web import RequestPayloadError

from telemetry import UnsafeId, body_deadline, incoming_id, new_id
from tools import Tool, ToolError

from ._agents import Agent
from ._keys import AGENTS, LIMITER, OVERLOAD, PIPELINE, REQUIRED_SCOPE, SETTINGS, VERIFIER
from ._oauth import looks_like_jwt
from ._scopes import permits, scope_of, step_up
from .settings import BridgeSettings

#: Headers whose repetition is refused: which copy counts would be the parser's guess, and
#: a proxy in front may have picked the other one.
SINGLE_HEADERS = ("X-Correlation-ID", "X-Request-ID", "Idempotency-Key")


class RefusedRequest(Exception):
    """The request cannot be taken as sent: `status` is 400 (a header sent twice or unsafe,
    broken framing, an empty body), 413 (over `details["limit_bytes"]`) or 415 (a content
    coding other than identity, or a body not declared as JSON)."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}


class ClientGone(Exception):
    """The client hung up before its body arrived: nothing to answer, nothing was done."""


def single_header(request: web.Request, name: str) -> None:
    """RefusedRequest (400) when `name` is sent more than once."""
    if len(request.headers.getall(name, ())) > 1:
        raise RefusedRequest(
            400, f"send the {name} header once; it was sent more than once", {"header": name}
        )


def correlation_id(request: web.Request, minted: str | None = None) -> str:
    """The caller's X-Correlation-ID, or `minted` (a new one when not given); RefusedRequest
    (400) when it is unsafe or when it, X-Request-ID or Idempotency-Key is sent twice."""
    for name in SINGLE_HEADERS:
        single_header(request, name)
    try:
        found = incoming_id(request.headers.get("X-Correlation-ID"), "X-Correlation-ID")
        return found or minted or new_id()
    except UnsafeId as exc:
        raise RefusedRequest(400, str(exc), {"header": exc.header}) from None


async def authenticate(request: web.Request) -> Agent:
    """The agent the bearer credential names: an agent key, or (OAuth on) a JWT access token
    from the issuer. ToolError `unauthenticated` when there is none or it is refused
    (`upstream_unavailable` when the issuer's keys cannot be had), RefusedRequest (400) when
    Authorization is sent twice."""
    single_header(request, "Authorization")
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    settings = request.app[SETTINGS]
    agent = None
    if scheme.lower() == "bearer" and credential:
        agent = request.app[AGENTS].authenticate(credential)
        verifier = request.app.get(VERIFIER)
        if agent is None and verifier is not None and looks_like_jwt(credential):
            return await verifier.agent(credential)
    if agent is None:
        raise ToolError("unauthenticated", _how_to_authenticate(settings))
    return agent


def _how_to_authenticate(settings: BridgeSettings) -> str:
    if settings.oauth.enabled and not settings.static_keys:
        return (
            f"Send an access token from {settings.oauth.issuer} as Authorization: Bearer"
            " <token>; see the resource_metadata URL in WWW-Authenticate."
        )
    if settings.oauth.enabled:
        return (
            "Send your agent API key, or an access token from"
            f" {settings.oauth.issuer}, as Authorization: Bearer <key or token>."
        )
    return "Send your agent API key as Authorization: Bearer <key>."


def require_scope(request: web.Request, agent: Agent, tool: Tool | None) -> None:
    """ToolError `forbidden` when the agent's token lacks `tool`'s scope; the request then
    carries the scope a new token needs, for the step-up challenge (bridge/_resource.py)."""
    if tool is None or permits(agent, tool):
        return
    request[REQUIRED_SCOPE] = step_up(agent, tool)
    raise ToolError(
        "forbidden",
        f"Your access token lacks the scope {scope_of(tool)} that {tool.name} needs. Ask the"
        f" issuer for a token with scope {request[REQUIRED_SCOPE]!r}.",
        details={"required_scope": scope_of(tool)},
    )


def rate_limit(request: web.Request, agent: Agent) -> ToolError | None:
    """The agent key's token bucket: None when the call may go, else `rate_limited`."""
    wait = request.app[LIMITER].acquire(agent.id)
    if wait is None:
        return None
    return ToolError(
        "rate_limited",
        "Too many calls from this agent key. Wait and retry.",
        retryable=True,
        retry_after_ms=max(1, round(wait * 1000)),
    )


def admission(request: web.Request, agent: Agent) -> ToolError | None:
    """Whether a tool call may start, asked before its body is read (a refusal costs the
    loop almost nothing): `rate_limited` from the key's token bucket, then its in-flight
    limits, then the bridge's overload guard (its adaptive in-flight limit and loop lag,
    bridge/_overload.py); else None. The key's
    own limits come first, so a key over them is told that (its doing), not overload."""
    return (
        rate_limit(request, agent)
        or request.app[PIPELINE].key_refusal(agent, request.content_length or 0)
        or _overloaded(request, agent)
    )


def _overloaded(request: web.Request, agent: Agent) -> ToolError | None:
    guard = request.app.get(OVERLOAD)
    refused = None if guard is None else guard.refusal()
    # Asked only while the bridge is overloaded (at its limit, or its loop lagging): when
    # one key holds most of the work in flight, the load is its doing and the others'
    # calls go on (issue 14's isolation holds under it).
    return refused if refused is None or request.app[PIPELINE].sheds(agent) else None


def body_limit(settings: BridgeSettings, tool: Tool | None) -> int:
    """The body limit of a call to `tool`: the large one only for tools that carry content
    inline (evidence); every other call, and a call to no known tool, gets the small one."""
    if tool is not None and tool.carries_content:
        return settings.max_body_bytes
    return min(settings.max_call_bytes, settings.max_body_bytes)


def too_large(limit: int) -> RefusedRequest:
    return RefusedRequest(
        413,
        f"the request body exceeds {limit} bytes; attach large evidence by uri instead",
        {"limit_bytes": limit},
    )


async def expect_continue_later(request: web.Request) -> None:
    """The invoke route's `Expect` handler: "100 Continue" waits for admission.

    aiohttp's default answers 100 before the handler runs, so a client that asks before
    sending a large body (RFC 9110 10.1.1) would send it even for a call refused at once for
    its key's limits or its declared size. Here `read_body` sends it once the call is
    admitted and its head checked, just before reading: a refusal comes instead of it,
    and the body is never sent."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:64]}")


async def _send_continue(request: web.Request) -> None:
    """Send the "100 Continue" that `expect_continue_later` held back, if it was asked for."""
    if request.version == HttpVersion11 and hdrs.EXPECT in request.headers:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own: not part of the answer's size


async def read_body(request: web.Request, limit: int, *, continue_held: bool = False) -> bytes:
    """The body, read no further than `limit` bytes (also when chunked). Raises
    RefusedRequest, ClientGone when the client hung up mid-body, or BodyTimeout (408)
    when the body did not arrive in time. `continue_held`: the route's expect handler is
    `expect_continue_later`, so the "100 Continue" a client asked for is sent here."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        # Identity only (RFC 9110 15.5.16): aiohttp's decoder never checks that a gzip
        # stream ended, so a truncated body would be read as a shorter (or empty) one.
        raise RefusedRequest(
            415,
            f"send the body uncompressed; content coding {coding[:40]!r} is not accepted",
            {"accepted_encodings": ["identity"]},
        )
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    if continue_held:
        await _send_continue(request)
    chunks, total = [], 0
    try:
        if request.content.is_eof():
            # All of it came with the head (a small call's usual case): nothing to wait
            # for, so no deadline to arm (a timer armed and cancelled, ~5 µs a call).
            raw = request.content.read_nowait()
            if len(raw) > limit:
                raise too_large(limit)
            return raw
        async with body_deadline(request):  # a trickled body answers 408, never holds on
            async for chunk in request.content.iter_chunked(64 * 1024):
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except (RequestPayloadError, BadHttpMessage):
        raise RefusedRequest(
            400, "the body's framing is broken (chunked encoding or length)"
        ) from None
    except ConnectionError:
        raise ClientGone() from None
    return b"".join(chunks)
