"""Reading a request body: identity coding only, bounded in size, broken framing refused.

The one place aiohttp's payload errors are translated for both transports (REST and MCP turn
`UnreadableBody` into their own answers): none may surface as a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web import RequestPayloadError

from telemetry import body_deadline
from tools import Tool

from .settings import BridgeSettings


class UnreadableBody(Exception):
    """The body cannot be taken as sent: `status` is 400 (broken framing, or empty), 413
    (over `details["limit_bytes"]`) or 415 (a content coding other than identity)."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}


class ClientGone(Exception):
    """The client hung up before its body arrived: nothing to answer, nothing was done."""


def body_limit(settings: BridgeSettings, tool: Tool | None) -> int:
    """The body limit of a call to `tool`: the large one only for tools that carry content
    inline (evidence); every other call, and a call to no known tool, gets the small one."""
    if tool is not None and tool.carries_content:
        return settings.max_body_bytes
    return min(settings.max_call_bytes, settings.max_body_bytes)


def too_large(limit: int) -> UnreadableBody:
    return UnreadableBody(
        413,
        f"the request body exceeds {limit} bytes; attach large evidence by uri instead",
        {"limit_bytes": limit},
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (also when chunked). Raises
    UnreadableBody, ClientGone when the client hung up mid-body, or BodyTimeout (408)
    when the body did not arrive in time."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        # Identity only (RFC 9110 15.5.16): aiohttp's decoder never checks that a gzip
        # stream ended, so a truncated body would be read as a shorter (or empty) one.
        raise UnreadableBody(
            415,
            f"send the body uncompressed; content coding {coding[:40]!r} is not accepted",
            {"accepted_encodings": ["identity"]},
        )
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    chunks, total = [], 0
    try:
        async with body_deadline(request):  # a trickled body answers 408, never holds on
            async for chunk in request.content.iter_chunked(64 * 1024):
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except (RequestPayloadError, BadHttpMessage):
        raise UnreadableBody(
            400, "the body's framing is broken (chunked encoding or length)"
        ) from None
    except ConnectionError:
        raise ClientGone() from None
    return b"".join(chunks)
