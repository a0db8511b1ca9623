"""Reading request bodies: media type, size bound, JSON syntax, schema."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from schemas import MAX_JSON_DEPTH, too_deep
from telemetry import body_deadline

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from ._keys import VALIDATORS
from ._validation import invalid_field


async def read_json(request: web.Request, schema: str, limit: int) -> dict[str, Any]:
    """The body as a JSON object valid against component `schema`; an empty body is `{}`."""
    raw = await _read_bounded(request, limit)
    if not raw.strip():
        body: Any = {}
    else:
        media = request.content_type
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(
                "unsupported_media_type",
                f"send the body as application/json, not {media}",
                extensions={"accepted": ["application/json"]},
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("invalid_json", f"the body is not valid JSON: {exc}") from None
        if too_deep(body):
            raise BadRequest("invalid_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    request.app[VALIDATORS].validate(schema, body)
    _refuse_nul(body)
    result: dict[str, Any] = body
    return result


def _refuse_nul(body: dict[str, Any]) -> None:
    """422 for a string holding U+0000, which PostgreSQL text and jsonb cannot store.

    Runs after schema validation, so `body` is one of the flat request objects."""
    for name, value in body.items():
        if isinstance(value, str) and "\x00" in value:
            raise invalid_field(f"/{name}", "must not contain the NUL character (U+0000)")


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    too_large = PayloadTooLarge(
        "payload_too_large",
        f"the body exceeds {limit} bytes",
        extensions={"limit_bytes": limit},
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks = []
    total = 0
    async with body_deadline(request):  # a trickled body answers 408, never holds on
        async for chunk in request.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise too_large
            chunks.append(chunk)
    return b"".join(chunks)
