"""The queue page: every visible ticket (a technician's own only), filtered by state and
priority, oldest first (as the API pages them), a page at a time; and its rows alone,
which console.js swaps in."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from ..domain import Priority, State
from ..errors import BadRequest
from ..store import TicketFilter
from ..web._keys import SERVICE
from ._format import countdown
from ._render import page
from ._session import caller

PAGE_SIZE = 50
STATES = [str(s) for s in State]
PRIORITIES = [str(p) for p in Priority]


def _choice(query: Any, name: str, allowed: list[str]) -> str:
    value: str = query.get(name, "")
    if value and value not in allowed:
        raise BadRequest("invalid_query", f"{name} must be one of {', '.join(allowed)}")
    return value


def _cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not raw:
        return None
    try:
        created, ident = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("invalid_query", "that page link is not one the console made") from None


def _encode(after: tuple[datetime, uuid.UUID]) -> str:
    raw = orjson.dumps([after[0].isoformat(), str(after[1])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _row(item: dict[str, Any]) -> dict[str, Any]:
    sla = item["sla"]
    return {
        **item,
        "response": countdown(item["response_remaining_s"], sla["responded_at"]),
        "resolution": countdown(item["resolution_remaining_s"], sla["resolved_at"]),
    }


async def _rows(request: web.Request) -> dict[str, Any]:
    state = _choice(request.query, "state", STATES)
    priority = _choice(request.query, "priority", PRIORITIES)
    where = TicketFilter([state] if state else [], [priority] if priority else [], None)
    items, after = await request.config_dict[SERVICE].page(
        caller(request), where, _cursor(request.query.get("cursor")), PAGE_SIZE
    )
    filters = {k: v for k, v in (("state", state), ("priority", priority)) if v}
    following = None
    if after is not None:
        following = "/console/queue?" + urlencode({**filters, "cursor": _encode(after)})
    return {
        "rows": [_row(i) for i in items],
        "state": state,
        "priority": priority,
        "states": STATES,
        "priorities": PRIORITIES,
        "next_page": following,
        # What console.js fetches to refresh this very view (same filters and page).
        "rows_url": _with_query("/console/queue/rows", request),
        "refresh_url": _with_query("/console/queue", request),
    }


def _with_query(path: str, request: web.Request) -> str:
    query = urlencode(list(request.query.items()))
    return f"{path}?{query}" if query else path


async def queue(request: web.Request) -> web.Response:
    return page(request, "queue.html", await _rows(request))


async def queue_rows(request: web.Request) -> web.Response:
    return page(request, "queue_rows.html", await _rows(request))
