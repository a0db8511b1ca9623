"""Technician routes: the directory agents and dispatchers schedule from."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from aiohttp import web

from schemas import parse_datetime
from telemetry import SAFE_ID

from ..errors import BadRequest
from ..service import TechnicianFilter
from ._keys import CALLER, TECHNICIANS, TEMPLATES
from ._tickets import (
    MAX_PAGE,
    bad_query,
    check_incident_types,
    int_param,
    json_response,
    mutation,
    stored_response,
)

_BOOLEANS = {"true": True, "false": False}


def technician_id(request: web.Request) -> str:
    raw = request.match_info["technician_id"]
    if not SAFE_ID.fullmatch(raw):
        raise BadRequest(
            "invalid_id",
            "technician_id must be 1-128 characters of letters, digits and ._:@+=-",
            extensions={"parameter": "technician_id"},
        )
    return raw


async def list_technicians(request: web.Request) -> web.Response:
    query = request.query
    for name in ("active", "skill", "available_from", "available_to", "limit", "cursor"):
        if len(query.getall(name, ())) > 1:
            raise bad_query(name, "must be given at most once")
    active = query.get("active")
    if active is not None and active not in _BOOLEANS:
        raise bad_query("active", "must be true or false")
    skill = query.get("skill")
    known = request.app[TEMPLATES]
    if skill is not None and skill not in known:
        raise bad_query("skill", f"must name an incident type: {sorted(known)}")
    where = TechnicianFilter(
        active=None if active is None else _BOOLEANS[active],
        skill=skill,
        available=_window(query),
    )
    limit = int_param(query, "limit", 50, 1, MAX_PAGE)
    after = _decode_cursor(query.get("cursor"))
    items, next_after = await request.app[TECHNICIANS].page(request[CALLER], where, after, limit)
    return json_response({"items": items, "next_cursor": _encode_cursor(next_after)})


async def get_technician(request: web.Request) -> web.Response:
    tid = technician_id(request)
    return json_response(await request.app[TECHNICIANS].get(request[CALLER], tid))


async def create_technician(request: web.Request) -> web.Response:
    caller, key, body = await mutation(request, "CreateTechnician")
    _check_skills(request, body)
    return stored_response(request, await request.app[TECHNICIANS].create(caller, key, body))


async def patch_technician(request: web.Request) -> web.Response:
    tid = technician_id(request)
    caller, key, body = await mutation(request, "PatchTechnician")
    _check_skills(request, body)
    service = request.app[TECHNICIANS]
    return stored_response(request, await service.patch(caller, key, tid, body))


def _check_skills(request: web.Request, body: dict[str, Any]) -> None:
    skills = body.get("skills", ())
    named = {f"/skills/{i}": s for i, s in enumerate(skills)}
    check_incident_types(request, named, "skills must name incident types; see GET /v1/templates")


def _window(query: Any) -> tuple[datetime, datetime] | None:
    """available_from and available_to, given together, or neither."""
    raw_from, raw_to = query.get("available_from"), query.get("available_to")
    if raw_from is None and raw_to is None:
        return None
    if raw_from is None or raw_to is None:
        missing = "available_from" if raw_from is None else "available_to"
        raise bad_query(missing, "is needed too: available_from and available_to go together")
    start, end = _instant(raw_from, "available_from"), _instant(raw_to, "available_to")
    if end <= start:
        raise bad_query("available_to", "must be after available_from")
    return start, end


def _instant(raw: str, name: str) -> datetime:
    try:
        return parse_datetime(raw)
    except ValueError:
        raise bad_query(name, "must be an RFC 3339 date-time with an offset") from None


def _encode_cursor(after: str | None) -> str | None:
    if after is None:
        return None
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        after = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, binascii.Error):
        after = ""
    if not SAFE_ID.fullmatch(after):
        raise bad_query("cursor", "is not a cursor this API issued")
    return after
