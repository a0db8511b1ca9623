"""Approval routes: list and read approvals, approve, deny, withdraw; and GET /v1/config."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..domain import Role
from ..errors import BadRequest, Forbidden
from ._body import read_json
from ._context import idempotency_key
from ._keys import APPROVALS, CALLER, SETTINGS
from ._tickets import (
    MAX_PAGE,
    _decode_cursor,
    _encode_cursor,
    bad_query,
    build_command,
    int_param,
    json_response,
)

STATUSES = ("pending", "approved", "denied", "expired", "executed", "stale", "withdrawn")


def _approval_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["approval_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest(
            "invalid_id",
            f"approval_id must be a UUID, got {raw[:64]!r}",
            extensions={"parameter": "approval_id"},
        ) from None


async def list_approvals(request: web.Request) -> web.Response:
    """GET /v1/approvals?status=&ticket_id=&limit=&cursor=: oldest first."""
    query = request.query
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise bad_query("status", f"must be one of {', '.join(STATUSES)}")
    ticket = query.get("ticket_id")
    try:
        ticket_id = None if ticket is None else uuid.UUID(ticket)
    except ValueError:
        raise bad_query("ticket_id", "must be a UUID") from None
    limit = int_param(query, "limit", 50, 1, MAX_PAGE)
    after = _decode_cursor(query.get("cursor"))
    items, following = await request.app[APPROVALS].page(
        request[CALLER], status, ticket_id, after, limit
    )
    return json_response({"items": items, "next_cursor": _encode_cursor(following)})


async def get_approval(request: web.Request) -> web.Response:
    approval = await request.app[APPROVALS].get(request[CALLER], _approval_id(request))
    return json_response({"approval": approval})


async def _reason(request: web.Request, schema: str) -> str | None:
    # The key is optional (a decision is final: a second one answers 409 approval_decided),
    # but a malformed one is refused like on every other mutation.
    idempotency_key(request)
    body = await read_json(request, schema, request.app[SETTINGS].max_json_bytes)
    reason = body.get("reason")
    return None if reason is None else str(reason)


async def approve(request: web.Request) -> web.Response:
    approval_id = _approval_id(request)
    reason = await _reason(request, "ApprovalDecision")
    service = request.app[APPROVALS]
    approval = await service.approve(request[CALLER], approval_id, reason, build_command)
    return json_response({"approval": approval})


async def deny(request: web.Request) -> web.Response:
    approval_id = _approval_id(request)
    reason = await _reason(request, "ApprovalDenial")
    assert reason is not None  # the schema requires it
    approval = await request.app[APPROVALS].deny(request[CALLER], approval_id, reason)
    return json_response({"approval": approval})


async def withdraw(request: web.Request) -> web.Response:
    approval_id = _approval_id(request)
    reason = await _reason(request, "ApprovalDecision")
    approval = await request.app[APPROVALS].withdraw(request[CALLER], approval_id, reason)
    return json_response({"approval": approval})


async def get_config(request: web.Request) -> web.Response:
    """GET /v1/config: the effective approval policy, for supervisors (people only)."""
    caller = request[CALLER]
    if caller.principal.trusted_gateway or caller.principal.role is not Role.SUPERVISOR:
        raise Forbidden("forbidden", "only supervisors may read the configuration")
    return json_response({"approvals": request.app[APPROVALS].policy.to_json()})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/config", get_config)
    r.add_get("/v1/approvals", list_approvals)
    r.add_get("/v1/approvals/{approval_id}", get_approval)
    r.add_post("/v1/approvals/{approval_id}/approve", approve)
    r.add_post("/v1/approvals/{approval_id}/deny", deny)
    r.add_post("/v1/approvals/{approval_id}/withdraw", withdraw)
