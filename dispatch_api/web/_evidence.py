"""Evidence routes: attach by URI or inline upload, list, read metadata, download content."""

from __future__ import annotations

import binascii
import uuid

import pybase64
from aiohttp import web

from ..domain import EvidenceKind
from ..errors import NotFound, PayloadTooLarge, Unprocessable
from ..service import EvidenceUpload, evidence_view
from . import _digest
from ._keys import CALLER, SERVICE, SETTINGS
from ._tickets import (
    MAX_PAGE,
    _decode_cursor,
    _encode_cursor,
    int_param,
    json_response,
    stored_response,
    ticket_id,
    ticket_mutation,
)
from ._validation import invalid_field


async def attach_evidence(request: web.Request) -> web.Response:
    tid = ticket_id(request)
    settings = request.app[SETTINGS]
    caller, key, body = await ticket_mutation(request, "EvidenceUpload", settings.max_body_bytes)
    content_type = body["content_type"]
    if content_type not in settings.evidence_content_types:
        raise Unprocessable(
            "evidence_content_type_not_allowed",
            f"evidence of type {content_type} is not accepted",
            extensions={"allowed_values": list(settings.evidence_content_types)},
        )
    if "size_bytes" in body:
        # JSON Schema counts 5.0 as an integer (its maximum keeps it within a bigint).
        body["size_bytes"] = int(body["size_bytes"])
    has_uri, has_inline = "uri" in body, "content_base64" in body
    if has_uri == has_inline:
        raise invalid_field("", "send exactly one of uri or content_base64")
    content = None
    if has_inline:
        try:
            content = pybase64.b64decode(body["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_field("/content_base64", "is not valid base64") from None
        if len(content) > settings.evidence_max_bytes:
            raise PayloadTooLarge(
                "evidence_too_large",
                f"evidence content exceeds {settings.evidence_max_bytes} bytes",
                extensions={"limit_bytes": settings.evidence_max_bytes},
            )
        digest = (await _digest.sha256(content)).hex()
        if body.get("sha256", digest) != digest:
            raise Unprocessable(
                "sha256_mismatch",
                "the sha256 sent does not match the uploaded content",
                extensions={"expected": body["sha256"], "actual": digest},
            )
        if body.get("size_bytes", len(content)) != len(content):
            raise invalid_field("/size_bytes", "does not match the uploaded content")
        sha256, size = digest, len(content)
    else:
        if "sha256" not in body or "size_bytes" not in body:
            raise invalid_field("", "evidence referenced by uri needs sha256 and size_bytes")
        sha256, size = body["sha256"], body["size_bytes"]
    upload = EvidenceUpload(
        kind=EvidenceKind(body["kind"]),
        tag=body.get("tag"),
        content_type=content_type,
        size_bytes=size,
        sha256=sha256,
        uri=body.get("uri"),
        content=content,
        description=body.get("description"),
    )
    response = await request.app[SERVICE].attach_evidence(
        caller, key, tid, upload, body.get("reason")
    )
    return stored_response(request, response)


async def list_evidence(request: web.Request) -> web.Response:
    """GET /v1/tickets/{id}/evidence?limit=&cursor=: every item, oldest first, in pages."""
    tid = ticket_id(request)
    limit = int_param(request.query, "limit", 50, 1, MAX_PAGE)
    after = _decode_cursor(request.query.get("cursor"))
    record, items, following = await request.app[SERVICE].evidence_page(
        request[CALLER], tid, after, limit
    )
    return json_response(
        {
            "ticket_id": str(tid),
            "total": record.ticket.evidence_count,
            "items": [evidence_view(e, record.ticket.id) for e in items],
            "next_cursor": _encode_cursor(following),
        }
    )


async def get_evidence(request: web.Request) -> web.Response:
    tid, eid = ticket_id(request), ticket_id(request, "evidence_id")
    item = await request.app[SERVICE].evidence_item(request[CALLER], tid, eid)
    return json_response(evidence_view(item, str(tid)))


async def download_evidence(request: web.Request) -> web.Response:
    tid, eid = ticket_id(request), ticket_id(request, "evidence_id")
    content_type, content = await request.app[SERVICE].evidence_content(request[CALLER], tid, eid)
    if content is None:
        raise NotFound(
            "evidence_content_external",
            "this evidence is referenced by uri, not stored here; see the uri in its metadata",
            extensions={"evidence_id": str(eid)},
        )
    return web.Response(
        body=content,
        content_type=content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{uuid.UUID(str(eid))}"',
            "X-Content-Type-Options": "nosniff",
        },
    )
