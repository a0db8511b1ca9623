"""The approvals page: pending approvals with exactly what would run, approve/deny forms, and
the decided history.

Decisions go through ApprovalService with the signed-in person as caller, so the rules are
the API's: a person whose role the rule names, never the requester. A decision redirects back
(303) with the outcome in the query (`?approval=ID&outcome=executed`); the page words the
message from that fixed set and the stored approval, so nothing a request sends is echoed.
A refusal (a role the rule does not name, the requester, a missing reason) is the page again
with the API's status and message, and nothing changed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from ..errors import ApiError, BadRequest, Conflict, NotFound
from ..service import Caller
from ..web._keys import APPROVALS, CLOCK, REBUILD
from ._render import page
from ._session import caller, form

#: Pending approvals on one page, oldest first (the ones about to expire lead).
PENDING_PAGE = 100
HISTORY = 50
#: As the API's ApprovalDecision / ApprovalDenial schemas.
MAX_REASON = 500
#: Outcomes a decision redirects with; anything else in the query is ignored.
OUTCOMES = frozenset({"executed", "refused", "stale", "expired", "denied", "decided"})
_CONFLICT_OUTCOMES = {
    "approval_stale": "stale",
    "approval_expired": "expired",
    "approval_decided": "decided",
}


def _approval_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["approval_id"])
    except ValueError:
        raise NotFound("approval_not_found", "there is no such approval") from None


def _age(now: datetime, iso: str) -> float:
    return (now - datetime.fromisoformat(iso)).total_seconds()


def _pending_row(a: dict[str, Any], now: datetime, who: Caller) -> dict[str, Any]:
    # The forms are offered to whom the API would let decide; the API still judges every POST.
    role, requester = str(who.principal.role), a["requested_by"]["id"] == who.principal.id
    return {
        **a,
        "why_not": (
            "you asked for this call: another person decides"
            if requester
            else None
            if role in a["approvers"]
            else f"only {', '.join(a['approvers'])} may decide (you are {role})"
        ),
        "age_s": _age(now, a["requested_at"]),
        "expires_in_s": -_age(now, a["expires_at"]),
        "arguments_json": orjson.dumps(
            a["arguments"], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode(),
    }


def _result_detail(a: dict[str, Any]) -> str:
    """What dispatch-api answered the approved call, in a few words."""
    result = a.get("result") or {}
    body = result.get("body")
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("code") or result.get("status"))
    return str(result.get("status"))


def _flash(a: dict[str, Any], outcome: str) -> tuple[str, str]:
    """(kind, message) for an outcome the page was redirected with."""
    what = f"{a['tool']} on ticket {a['ticket_id']}"
    if outcome == "executed":
        return "ok", f"Approved: {what} ran (dispatch-api answered {a['result']['status']})."
    if outcome == "refused":
        return "error", (
            f"Approved, but dispatch-api refused {what}: {_result_detail(a)}. Nothing changed."
        )
    if outcome == "denied":
        return "ok", f"Denied: {what} will not run. Reason: {a['reason']}"
    if outcome == "stale":
        return "error", (
            f"Not run: the ticket changed after {what} was asked for (stale); nothing was done."
        )
    if outcome == "expired":
        return "error", f"Not run: the approval of {what} expired before it was decided."
    by = (a.get("decided_by") or {}).get("id") or "the system"
    return "error", (
        f"Already decided: the approval of {what} is {a['status']} (by {by}); a decision is final."
    )


async def approvals(request: web.Request) -> web.Response:
    return await _page(request)


async def _page(
    request: web.Request, status: int = 200, refused: str | None = None
) -> web.Response:
    service = request.config_dict[APPROVALS]
    who = caller(request)
    now = request.config_dict[CLOCK]()
    pending, more = await service.page(who, "pending", None, None, PENDING_PAGE)
    history = await service.recent_decided(who, HISTORY)
    flash = None
    if refused is not None:
        flash = ("error", refused)
    elif request.query.get("outcome") in OUTCOMES:
        try:
            shown = await service.get(who, uuid.UUID(request.query.get("approval", "")))
            flash = _flash(shown, request.query["outcome"])
        except (ValueError, NotFound):
            flash = None  # a link to an approval this person cannot see says nothing
    context = {
        "pending": [_pending_row(a, now, who) for a in pending],
        "more_pending": more is not None,
        "history": history,
        "flash": flash,
        "max_reason": MAX_REASON,
    }
    return page(request, "approvals.html", context, status)


def _reason(fields: dict[str, str], required: bool) -> str | None:
    reason = fields.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise BadRequest("invalid_reason", f"a reason is at most {MAX_REASON} characters")
    if required and not reason:
        raise BadRequest("reason_required", "a reason is required to deny a call")
    return reason or None


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, "approve")


async def deny(request: web.Request) -> web.Response:
    return await _decide(request, "deny")


async def _decide(request: web.Request, verdict: str) -> web.Response:
    approval_id = _approval_id(request)
    service = request.config_dict[APPROVALS]
    who = caller(request)
    try:
        reason = _reason(await form(request), required=verdict == "deny")
        if verdict == "approve":
            rebuild = request.config_dict[REBUILD]
            decided = await service.approve(who, approval_id, reason, rebuild)
            outcome = "executed" if decided["status"] == "executed" else "refused"
        else:
            assert reason is not None  # _reason requires it
            decided = await service.deny(who, approval_id, reason)
            outcome = "denied"
    except Conflict as conflict:
        if conflict.code not in _CONFLICT_OUTCOMES:  # e.g. the ticket busy: try again
            return await _page(request, conflict.status, f"Not done: {conflict.detail}.")
        outcome = _CONFLICT_OUTCOMES[conflict.code]
    except ApiError as error:
        if isinstance(error, NotFound):
            raise  # the 404 page, as for a missing ticket
        return await _page(request, error.status, f"Not done: {error.detail}.")
    location = f"/console/approvals?approval={approval_id}&outcome={outcome}"
    return web.Response(status=303, headers={"Location": location})
