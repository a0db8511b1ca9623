"""The tool set: descriptions written for the model, roles, annotations and handlers.

Each handler maps validated arguments onto one dispatch-api call; everything else (auth,
request ids, retries, error translation) happens around it, once, in the bridge.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from dispatch_client import CallContext, DispatchClient
from schemas import parse_datetime

from ._errors import ToolError
from ._tool import Handler, Tool

DISPATCH = frozenset({"dispatcher", "supervisor"})
FIELD = frozenset({"technician", "supervisor"})
EVERYONE = frozenset({"dispatcher", "technician", "supervisor"})


def _action(path: str) -> Handler:
    """A handler POSTing the arguments (minus ticket_id) to /v1/tickets/{id}/{path}."""

    async def handle(
        client: DispatchClient, call: CallContext, args: dict[str, Any]
    ) -> dict[str, Any]:
        ticket_id = args.pop("ticket_id")
        result: dict[str, Any] = await client.act(call, ticket_id, path, args)
        return result

    handle.action_route = True  # type: ignore[attr-defined]  # read by Tool.may_need_approval
    return handle


async def _create(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    return await client.create_ticket(call, args)


async def _get(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    return {"ticket": await client.get_ticket(call, args["ticket_id"])}


async def _update(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    ticket_id = args.pop("ticket_id")
    return await client.update_ticket(call, ticket_id, args)


async def _timeline(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    params: dict[str, str] = {k: str(args[k]) for k in ("after_seq", "limit") if k in args}
    return await client.timeline(call, args["ticket_id"], params)


async def _queue(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    params = [("state", s) for s in args.get("state", [])]
    params += [("priority", p) for p in args.get("priority", [])]
    params += [(k, str(args[k])) for k in ("technician_id", "limit", "cursor") if k in args]
    return await client.list_tickets(call, params)


def _check_window(args: dict[str, Any]) -> None:
    """Both ends or neither, the end after the start (a null counts as absent: the schema
    lets `{"window_start": ..., "window_end": null}` through)."""
    start, end = args.get("window_start"), args.get("window_end")
    if start is None and end is None:
        return
    if start is None or end is None:
        missing = "window_start" if start is None else "window_end"
        path, expected, received = f"/{missing}", "a date-time", "nothing"
    elif parse_datetime(end) <= parse_datetime(start):
        path, expected, received = "/window_end", "a date-time after window_start", end
    else:
        return
    raise ToolError(
        "invalid_arguments",
        "Invalid arguments for technician.list: give window_start and window_end together,"
        " the end after the start. Fix them and call again.",
        details={"errors": [{"path": path, "expected": expected, "received": received[:80]}]},
    )


async def _technicians(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    _check_window(args)
    # Agents schedule from this list, so only active technicians are shown.
    params = [("active", "true")]
    params += [(k, str(args[k])) for k in ("skill", "limit", "cursor") if k in args]
    params += [
        (api, str(args[tool]))
        for tool, api in (("window_start", "available_from"), ("window_end", "available_to"))
        if tool in args
    ]
    return await client.call(call, "GET", "/v1/technicians", params=params)


async def _approval(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    # dispatch-api shows an agent only the approvals it asked for (another's: 404).
    return await client.call(call, "GET", f"/v1/approvals/{args['approval_id']}")


async def _sla(client: DispatchClient, call: CallContext, args: dict[str, Any]) -> Any:
    status = args.get("status") or "breached"
    page = await client.call(call, "GET", "/v1/sla", params={"status": status})
    items = [t for t in page["items"] if args.get("priority") in (None, t.get("priority"))]
    return {
        "available": True,
        "status": status,
        "message": f"{len(items)} active tickets {status.replace('_', ' ')} now"
        " (remaining seconds are negative when late).",
        "items": items,
    }


@cache
def catalog() -> tuple[Tool, ...]:
    """Every tool, in the deterministic order `tools/list` reports. Built once per process:
    the tools are immutable and their validators compiled, so every app shares them."""
    return (
        Tool(
            "ticket.create",
            "Create a ticket",
            "Open a new field-service ticket for a customer's problem. Use it once per new"
            " incident, not to change an existing ticket (use ticket.update). With customer"
            " name, a phone or email, site address, incident type and priority the ticket is"
            " READY_TO_SCHEDULE; otherwise it is NEW and `missing_fields` says what to ask for.",
            DISPATCH,
            _create,
        ),
        Tool(
            "ticket.get",
            "Read a ticket",
            "Read one ticket: state, priority, customer and site, assignment, attached"
            " evidence (the newest 20 items, and `evidence_summary` counting every item by"
            " kind and tag), `missing_fields` and the `allowed_actions` it admits now. Changes"
            " nothing.",
            EVERYONE,
            _get,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "ticket.update",
            "Update ticket details",
            "Fill in or correct a ticket's details (customer, contact, address, incident"
            " type, priority, description). A NEW ticket becomes READY_TO_SCHEDULE once"
            " nothing required is missing. Does not schedule or move the ticket otherwise.",
            DISPATCH,
            _update,
        ),
        Tool(
            "ticket.timeline",
            "Read a ticket's timeline",
            "The ticket's history, oldest first: every change and every rejected attempt,"
            " who or what did it (actor, role, tool), why, and with which evidence. Use it to"
            " explain why a ticket is in its state. Changes nothing.",
            EVERYONE,
            _timeline,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "queue.view",
            "View the ticket queue",
            "List tickets, oldest first, filtered by state, priority or technician, e.g."
            " state=[READY_TO_SCHEDULE] to find tickets waiting to be scheduled. Pass"
            " `cursor` from the previous page to continue. Changes nothing.",
            EVERYONE,
            _queue,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "technician.list",
            "Find technicians",
            "List active technicians who could take a job: `skill` is the ticket's"
            " incident_type; `window_start`/`window_end` keep only those free for that whole"
            " window (no other scheduled, dispatched or on-site job overlapping it). Pass an"
            " `id` from the result as technician_id to ticket.schedule. Changes nothing.",
            DISPATCH,
            _technicians,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "ticket.schedule",
            "Schedule a ticket",
            "Assign a technician and an arrival window to a READY_TO_SCHEDULE ticket, or"
            " reschedule a SCHEDULED one. The ticket becomes SCHEDULED. The technician must"
            " be active and skilled for the ticket's incident type (technician.list finds"
            " who is free), the window must start now or later and must not overlap the"
            " technician's other visits; a refusal names the clash, who could take it and"
            " the technician's earliest free window.",
            DISPATCH,
            _action("schedule"),
            idempotent=True,
        ),
        Tool(
            "ticket.dispatch",
            "Dispatch a technician",
            "Send the scheduled technician out: SCHEDULED -> DISPATCHED. Emergency bypass:"
            " a P1 ticket still READY_TO_SCHEDULE may be dispatched directly with"
            " `technician_id` and a `bypass_reason`, which is recorded for review.",
            DISPATCH,
            _action("dispatch"),
        ),
        Tool(
            "tech.arrive",
            "Record arrival on site",
            "Record that the technician has arrived: DISPATCHED -> ON_SITE. This is when the"
            " response target is met.",
            FIELD,
            _action("arrive"),
        ),
        Tool(
            "evidence.attach",
            "Attach evidence",
            "Attach a photo, signature, document or note to a ticket, either inline"
            " (`content_base64`) or by reference (`uri` with `sha256` and `size_bytes`). Use"
            " `tag` to say what it shows (e.g. before, after, customer): completion checks the"
            " incident template's required kinds and tags. A ticket holds at most 200 items"
            " by default.",
            EVERYONE,
            _action("evidence"),
            carries_content=True,
        ),
        Tool(
            "tech.complete",
            "Complete the job",
            "Mark the work done: ON_SITE -> COMPLETED. Refused with `evidence_missing`, and"
            " the exact list of what is missing, until the evidence the incident type"
            " requires is attached; attach it with evidence.attach, then call this again.",
            FIELD,
            _action("complete"),
        ),
        Tool(
            "ticket.hold",
            "Put a ticket on hold",
            "Pause work on an active ticket with a reason and a cause: `customer` (e.g. no"
            " access; pauses the SLA clock) or `provider` (e.g. parts on order).",
            EVERYONE,
            _action("hold"),
        ),
        Tool(
            "ticket.resume",
            "Resume a held ticket",
            "Take a ticket off hold; it returns to the state it was in before the hold.",
            EVERYONE,
            _action("resume"),
        ),
        Tool(
            "ticket.cancel",
            "Cancel a ticket",
            "Cancel a ticket that is not completed, with the reason. This is final: a"
            " cancelled ticket cannot be reopened.",
            DISPATCH,
            _action("cancel"),
            destructive=True,
        ),
        Tool(
            "customer.follow_up",
            "Record a customer contact attempt",
            "Record an attempt to reach the customer (channel and outcome), e.g. when a"
            " ticket is missing details or the technician cannot get access. Does not change"
            " the ticket's state.",
            EVERYONE,
            _action("contact-attempts"),
        ),
        Tool(
            "ticket.escalate",
            "Escalate a ticket",
            "Escalate a ticket to a supervisor, manager or emergency line with the reason,"
            " e.g. an SLA breach or a safety risk. Does not change the ticket's state.",
            DISPATCH,
            _action("escalations"),
        ),
        Tool(
            "mitigation.record",
            "Record a mitigation",
            "Record what was done to limit damage or risk before the fix (e.g. water main"
            " shut off). Does not change the ticket's state.",
            EVERYONE,
            _action("mitigations"),
        ),
        Tool(
            "sla.status",
            "SLA status",
            "Tickets that have breached or are about to breach their response or resolution"
            " targets. Changes nothing.",
            DISPATCH,
            _sla,
            read_only=True,
            idempotent=True,
        ),
        Tool(
            "approval.status",
            "Read an approval",
            "The decision on a call that waited for a person's approval (its approval_id is in"
            " an approval_pending answer): pending, executed (with the call's result), denied"
            " (with the reason), expired, stale or withdrawn. Only approvals you asked for."
            " Changes nothing; to get the result of your call, you may also re-send that call"
            " with the same tool_call_id.",
            EVERYONE,
            _approval,
            read_only=True,
            idempotent=True,
        ),
    )
