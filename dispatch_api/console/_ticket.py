"""The ticket page, the "why" story: SLA, allowed actions, the timeline with who did what
through which tool under which ids, rejected attempts and what they lacked, and evidence
with downloads and thumbnails. A ticket the caller may not see is a 404, like the API's."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from ..errors import NotFound
from ..service import evidence_view, queue_view
from ..web._keys import CLOCK, SERVICE, SETTINGS
from ._format import countdown, trace_link
from ._render import page
from ._session import caller

#: Events shown on one page (the API's largest timeline page); older ones page on.
TIMELINE_PAGE = 500
EVIDENCE_PAGE = 200
#: Inline images the browser may show as thumbnails (never SVG: it can carry script).
THUMBNAIL_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})


def _uuid(request: web.Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        # A malformed id names no ticket: the same page as an unknown one.
        raise NotFound("ticket_not_found", "there is no such ticket") from None


def _event(e: dict[str, Any], trace_ui: str | None) -> dict[str, Any]:
    details = e.get("details") or {}
    rejected = e["type"].endswith("_rejected")
    return {
        **e,
        "trace_url": trace_link(trace_ui, e.get("trace_id")),
        "rejected": rejected,
        "code": details.get("code") if rejected else None,
        "missing_evidence": details.get("missing_evidence", []) if rejected else [],
        "missing_fields": details.get("missing_fields", []) if rejected else [],
    }


async def ticket(request: web.Request) -> web.Response:
    tid = _uuid(request, "ticket_id")
    service = request.config_dict[SERVICE]
    who = caller(request)
    after_seq = 0
    raw_after = request.query.get("after_seq", "0")
    if raw_after.isdigit() and len(raw_after) < 10:
        after_seq = int(raw_after)
    now = request.config_dict[CLOCK]()
    # The queue row's view: the ticket's own plus its SLA time left, paused holds counted.
    view = queue_view(await service.evidence(who, tid), now)
    events, following = await service.timeline(who, tid, after_seq, TIMELINE_PAGE)
    _, evidence, _more = await service.evidence_page(who, tid, None, EVIDENCE_PAGE)
    trace_ui = request.config_dict[SETTINGS].trace_ui_url
    timeline = [_event(e, trace_ui) for e in events]
    sla = view["sla"]
    context = {
        "ticket": view,
        "response": countdown(view["response_remaining_s"], sla["responded_at"]),
        "resolution": countdown(view["resolution_remaining_s"], sla["resolved_at"]),
        # allowed_tools lists each action's tool in the same order (domain.allowed_tools).
        "actions": list(zip(view["allowed_actions"], view["allowed_tools"], strict=True)),
        "timeline": timeline,
        "rejected": [e for e in timeline if e["rejected"]],
        "next_events": (
            f"/console/tickets/{tid}?after_seq={following}" if following is not None else None
        ),
        "evidence": [
            {
                **_evidence_row(e, tid),
                "thumbnail": e.stored_inline and e.content_type in THUMBNAIL_TYPES,
            }
            for e in evidence
        ],
        "evidence_total": view["evidence_summary"]["total"],
    }
    return page(request, "ticket.html", context)


def _evidence_row(e: Any, tid: uuid.UUID) -> dict[str, Any]:
    """The API's view of the item, with who captured it in one line and the console's own
    download URL (the page's session, not an API token, fetches it)."""
    view = evidence_view(e, str(tid))
    who = view["captured_by"]
    return {
        **view,
        "captured_by": f"{who['actor_type']} {who['actor_id']} ({who['role']})",
        "download": f"/console/tickets/{tid}/evidence/{e.id}/content" if e.stored_inline else None,
    }


async def evidence_content(request: web.Request) -> web.Response:
    """The stored bytes as an attachment (a browser saves, never renders, what an agent
    uploaded); <img> thumbnails load the same URL."""
    tid, eid = _uuid(request, "ticket_id"), _uuid(request, "evidence_id")
    content_type, content = await request.config_dict[SERVICE].evidence_content(
        caller(request), tid, eid
    )
    if content is None:
        raise NotFound("evidence_content_external", "this evidence is stored elsewhere (uri)")
    return web.Response(
        body=content,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{eid}"'},
    )
