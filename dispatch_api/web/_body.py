"""Reading request bodies: media type, size bound, JSON syntax, schema."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web import RequestPayloadError

from schemas import MAX_JSON_DEPTH, too_deep
from telemetry import YIELD_AFTER_BODY_BYTES, body_deadline

from ..errors import BadRequest, ClientClosedRequest, PayloadTooLarge, UnsupportedMediaType
from ._keys import VALIDATORS
from ._validation import invalid_field


async def read_json(request: web.Request, schema: str, limit: int) -> dict[str, Any]:
    """The body as a JSON object valid against component `schema`. No body (not declared
    JSON) is `{}`, for routes whose fields are all optional; an empty body declared JSON is
    not JSON (400): taking it as `{}` once created empty tickets."""
    raw = await _read_bounded(request, limit)
    media = request.content_type
    declared_json = media == "application/json" or media.endswith("+json")
    if not raw and not declared_json:
        body: Any = {}
    else:
        body = _parse(raw, media, declared_json)
        if len(raw) >= YIELD_AFTER_BODY_BYTES:
            # Parsing took one long step (13 ms for a 7 MB upload), and the fingerprint and
            # decoding that follow take as long again: let waiting requests run in between.
            await asyncio.sleep(0)
    request.app[VALIDATORS].validate(schema, body)
    _refuse_nul(body)
    result: dict[str, Any] = body
    return result


def _parse(raw: bytes, media: str, declared_json: bool) -> Any:
    if not raw.strip():
        raise BadRequest("invalid_json", "the body is empty; send a JSON object")
    if not declared_json:
        raise UnsupportedMediaType(
            "unsupported_media_type",
            f"send the body as application/json, not {media}",
            extensions={"accepted": ["application/json"]},
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"the body is not valid JSON: {exc}") from None
    if too_deep(body, text=raw):
        raise BadRequest("invalid_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def _refuse_nul(body: dict[str, Any]) -> None:
    """422 for a string holding U+0000, which PostgreSQL text and jsonb cannot store.

    Runs after schema validation, so `body` is one of the flat request objects."""
    for name, value in body.items():
        if isinstance(value, str) and "\x00" in value:
            raise invalid_field(f"/{name}", "must not contain the NUL character (U+0000)")


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The body as sent, or the one error that says why not; the one place aiohttp's payload
    errors are translated (none may surface as a 500, a 5xx the SLO alerts count)."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        # Identity only (RFC 9110 15.5.16): aiohttp's decoder never checks that a gzip
        # stream ended, so a truncated body would be read as a shorter (or empty) one.
        raise UnsupportedMediaType(
            "unsupported_content_encoding",
            f"send the body uncompressed; content coding {coding[:40]!r} is not accepted",
            extensions={"accepted_encodings": ["identity"]},
            headers={"Accept-Encoding": "identity"},
        )
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks = []
    total = 0
    content = request.content
    try:
        if content.is_eof():
            # The whole body came with the head, as a small one does: take it as it is,
            # without the deadline and the chunk loop a body still arriving needs.
            chunks.append(content.read_nowait())
            total = len(chunks[0])
        else:
            async with body_deadline(request):  # a trickled body answers 408, never holds on
                async for chunk in content.iter_chunked(64 * 1024):
                    total += len(chunk)
                    if total > limit:
                        raise _too_large(limit)
                    chunks.append(chunk)
        if total > limit:
            raise _too_large(limit)
    except (RequestPayloadError, BadHttpMessage):
        raise BadRequest(
            "malformed_body", "the body's framing is broken (chunked encoding or length)"
        ) from None
    except ConnectionError:
        raise ClientClosedRequest() from None
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "payload_too_large", f"the body exceeds {limit} bytes", extensions={"limit_bytes": limit}
    )
