"""Ticket routes: create, read, list, update, one route per action, notes, timeline."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from schemas import parse_datetime
from telemetry import SAFE_ID, log_context

from ..domain import (
    Action,
    Arrive,
    Cancel,
    Command,
    Complete,
    Dispatch,
    Hold,
    HoldCause,
    Note,
    Priority,
    Resume,
    Schedule,
    State,
    Update,
)
from ..errors import BadRequest, IdempotencyKeyMissing, Unprocessable
from ..service import Caller, DryRun
from ..store import IdempotencyKey, StoredResponse, TicketFilter, idempotency
from ._body import read_json
from ._context import idempotency_key
from ._digest import sha256
from ._keys import CALLER, SERVICE, SETTINGS, TEMPLATES
from ._validation import invalid_field

MAX_PAGE = 200


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def stored_response(request: web.Request, stored: StoredResponse) -> web.Response:
    """The stored (or just stored) answer; its problem code or ticket id go to the log line."""
    content_type = "application/problem+json" if stored.status >= 400 else "application/json"
    if stored.status >= 400 or "ticket_id" not in request.match_info:
        body = orjson.loads(stored.body)
        fields = log_context(request)
        if stored.status >= 400:
            fields["error_code"] = body.get("code")
        elif isinstance(body.get("ticket"), dict):
            fields["ticket_id"] = body["ticket"].get("id")
    response = web.Response(status=stored.status, body=stored.body, content_type=content_type)
    if stored.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def ticket_id(request: web.Request, name: str = "ticket_id") -> uuid.UUID:
    raw = request.match_info[name]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadRequest(
            "invalid_id", f"{name} must be a UUID, got {raw[:64]!r}", extensions={"parameter": name}
        ) from None


async def mutation(
    request: web.Request, schema: str, limit: int | None = None
) -> tuple[Caller, IdempotencyKey, dict[str, Any]]:
    """Caller, idempotency key and validated body of a mutating request."""
    if dry_run_requested(request):  # a route without a dry run must not quietly write
        raise bad_query("dry_run", "is not supported on this route; nothing was done")
    caller: Caller = request[CALLER]
    key = idempotency_key(request)
    if key is None:
        raise IdempotencyKeyMissing()
    settings = request.app[SETTINGS]
    body = await read_json(request, schema, limit or settings.max_json_bytes)
    fingerprint = await sha256(idempotency.canonical_request(request.method, request.path, body))
    ikey = IdempotencyKey(caller.principal.id, key, request.method, request.path, fingerprint)
    return caller, ikey, body


async def ticket_mutation(
    request: web.Request, schema: str, limit: int | None = None
) -> tuple[Caller, IdempotencyKey | DryRun, dict[str, Any]]:
    """As `mutation`; with `?dry_run=true`, a DryRun instead of the key (none is needed)."""
    if not dry_run_requested(request):
        return await mutation(request, schema, limit)
    idempotency_key(request)  # not needed, nor stored; but a malformed one is still 400
    caller: Caller = request[CALLER]
    body = await read_json(request, schema, limit or request.app[SETTINGS].max_json_bytes)
    log_context(request)["dry_run"] = True
    raw = request.match_info.get("ticket_id")
    tid = None if raw is None else uuid.UUID(raw)  # the handler validated it
    actor = caller.actor
    return caller, DryRun(tid, body, actor.type, actor.tool_name), body


def dry_run_requested(request: web.Request) -> bool:
    """`?dry_run=true|false` (absent: false); 400 `invalid_query` for anything else."""
    values = request.query.getall("dry_run", [])
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise bad_query("dry_run", "must be true or false, once")
    return bool(values[0] == "true")


def _check_incident_type(request: web.Request, body: dict[str, Any]) -> None:
    name = body.get("incident_type")
    if name is not None:
        message = f"unknown incident_type {name!r}; see GET /v1/templates"
        check_incident_types(request, {"/incident_type": name}, message)


def check_incident_types(request: web.Request, named: dict[str, Any], message: str) -> None:
    """Unprocessable `unknown_incident_type` (`message`) naming, at most 10, the JSON
    pointers in `named` whose value is no seeded template, with the templates there are."""
    templates = request.app[TEMPLATES]
    unknown = [path for path, name in named.items() if name not in templates]
    if unknown:
        raise Unprocessable(
            "unknown_incident_type",
            message,
            extensions={
                "errors": [{"path": p, "message": "not a known template"} for p in unknown[:10]],
                "allowed_values": sorted(templates),
            },
        )


async def create_ticket(request: web.Request) -> web.Response:
    caller, key, body = await ticket_mutation(request, "CreateTicket")
    _check_incident_type(request, body)
    return stored_response(request, await request.app[SERVICE].create(caller, key, body))


async def update_ticket(request: web.Request) -> web.Response:
    tid = ticket_id(request)
    caller, key, body = await ticket_mutation(request, "UpdateTicket")
    _check_incident_type(request, body)
    fields = {k: v for k, v in body.items() if k != "reason"}
    if not fields:
        raise invalid_field("", "name at least one field to change; reason alone changes nothing")
    command = Update(fields, reason=body.get("reason"))
    return stored_response(request, await request.app[SERVICE].act(caller, key, tid, command))


def _datetime(body: dict[str, Any], name: str) -> datetime:
    try:
        return parse_datetime(body[name])
    except ValueError as exc:
        raise invalid_field(f"/{name}", str(exc)) from None


def _schedule(body: dict[str, Any]) -> Command:
    start, end = _datetime(body, "window_start"), _datetime(body, "window_end")
    if end <= start:
        raise invalid_field("/window_end", "must be after window_start")
    return Schedule(body["technician_id"], start, end, reason=body.get("reason"))


_ACTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], Command]]] = {
    "schedule": ("Schedule", _schedule),
    "dispatch": (
        "Dispatch",
        lambda b: Dispatch(b.get("technician_id"), b.get("bypass_reason"), b.get("reason")),
    ),
    "arrive": ("Reason", lambda b: Arrive(b.get("reason"))),
    "complete": ("Reason", lambda b: Complete(b.get("reason"))),
    "hold": ("Hold", lambda b: Hold(HoldCause(b["cause"]), b["reason"])),
    "resume": ("Reason", lambda b: Resume(b.get("reason"))),
    "cancel": ("Cancel", lambda b: Cancel(b["reason"])),
    "contact-attempts": (
        "ContactAttempt",
        lambda b: Note(Action.CONTACT_ATTEMPT, b.get("reason")),
    ),
    "escalations": ("Escalation", lambda b: Note(Action.ESCALATE, b["reason"])),
    "mitigations": ("Mitigation", lambda b: Note(Action.MITIGATE, b.get("reason"))),
}

ACTION_ROUTES = tuple(_ACTIONS)

#: Body fields of notes that are details of their event rather than its reason.
_NOTE_DETAILS = ("channel", "outcome", "level", "action")


def build_command(name: str, body: Mapping[str, Any]) -> tuple[Command, dict[str, Any]]:
    """The command of action route `name` and its event details, from its (valid) body;
    an approved call is rebuilt from the body it was asked with."""
    command = _ACTIONS[name][1](dict(body))
    return command, {k: body[k] for k in _NOTE_DETAILS if k in body}


def action_handler(name: str) -> Callable[[web.Request], Any]:
    schema = _ACTIONS[name][0]

    async def handle(request: web.Request) -> web.Response:
        tid = ticket_id(request)
        caller, key, body = await ticket_mutation(request, schema)
        command, details = build_command(name, body)
        service = request.app[SERVICE]
        answer = await service.act(caller, key, tid, command, details, arguments=body)
        return stored_response(request, answer)

    handle.__name__ = f"{name.replace('-', '_')}_ticket"
    return handle


async def get_ticket(request: web.Request) -> web.Response:
    tid = ticket_id(request)
    return json_response(await request.app[SERVICE].get(request[CALLER], tid))


async def list_tickets(request: web.Request) -> web.Response:
    query = request.query
    states = _multi(query, "state", {s.value for s in State})
    priorities = _multi(query, "priority", {p.value for p in Priority})
    technician = query.get("technician_id")
    if technician is not None and not SAFE_ID.fullmatch(technician):
        raise bad_query("technician_id", "must be 1-128 characters of letters, digits and ._:@+=-")
    limit = int_param(query, "limit", 50, 1, MAX_PAGE)
    after = _decode_cursor(query.get("cursor"))
    items, next_after = await request.app[SERVICE].page(
        request[CALLER], TicketFilter(states, priorities, technician), after, limit
    )
    return json_response({"items": items, "next_cursor": _encode_cursor(next_after)})


async def get_timeline(request: web.Request) -> web.Response:
    tid = ticket_id(request)
    after_seq = int_param(request.query, "after_seq", 0, 0, 2**31 - 1)
    limit = int_param(request.query, "limit", 100, 1, 500)
    events, next_after = await request.app[SERVICE].timeline(request[CALLER], tid, after_seq, limit)
    return json_response({"ticket_id": str(tid), "events": events, "next_after_seq": next_after})


def bad_query(name: str, message: str) -> BadRequest:
    return BadRequest(
        "invalid_query", f"query parameter {name} {message}", extensions={"parameter": name}
    )


def _multi(query: Any, name: str, allowed: set[str]) -> list[str]:
    # An empty value ("priority=", "state=NEW,") is refused, not read as "no filter": a
    # client that meant to filter would otherwise get every ticket.
    values = [v for raw in query.getall(name, []) for v in raw.split(",")]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise bad_query(name, f"has unknown values {unknown[:5]}; allowed: {sorted(allowed)}")
    return values


def int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_query(name, "must be an integer") from None
    if not low <= value <= high:
        raise bad_query(name, f"must be between {low} and {high}")
    return value


def _encode_cursor(after: tuple[datetime, uuid.UUID] | None) -> str | None:
    if after is None:
        return None
    raw = orjson.dumps([after[0].isoformat(), str(after[1])])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if raw is None:
        return None
    try:
        created, ident = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        # astimezone: a forged offset may push the instant out of datetime's range.
        return parse_datetime(created), uuid.UUID(ident)
    except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise bad_query("cursor", "is not a cursor this API issued") from None


async def list_sla(request: web.Request) -> web.Response:
    """GET /v1/sla?status=breached|at_risk: active tickets late, or due within the window."""
    status = request.query.get("status", "breached")
    if status not in ("breached", "at_risk"):
        raise bad_query("status", "must be breached or at_risk")
    limit = int_param(request.query, "limit", 100, 1, MAX_PAGE)
    window = timedelta(minutes=request.app[SETTINGS].sla_at_risk_minutes)
    items = await request.app[SERVICE].sla(request[CALLER], status, window, limit)
    return json_response(
        {"status": status, "at_risk_window_s": window.total_seconds(), "items": items}
    )
