"""The ticket state machine: given a ticket and a command, decide what happens.

`decide` never raises for a business rule: it returns `Accepted` with the new ticket, or
`Rejected` with a stable code and details. Either way the caller appends exactly one
timeline event, whose type the decision names.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ._evidence import unmet_requirements
from ._model import (
    Action,
    EvidenceKind,
    EvidenceSummary,
    HoldCause,
    IncidentTemplate,
    Priority,
    State,
    Ticket,
)
from ._tool_names import tools_for

ACTIVE_STATES = frozenset(
    {State.NEW, State.READY_TO_SCHEDULE, State.SCHEDULED, State.DISPATCHED, State.ON_SITE}
)
NON_TERMINAL_STATES = frozenset(s for s in State if not s.terminal)

#: Actions that move a ticket, by the states they may start from. Resume returns to the
#: state the ticket held before; update out of NEW moves on to READY_TO_SCHEDULE.
SOURCE_STATES: Mapping[Action, frozenset[State]] = {
    Action.UPDATE: NON_TERMINAL_STATES,
    Action.SCHEDULE: frozenset({State.READY_TO_SCHEDULE, State.SCHEDULED}),
    Action.DISPATCH: frozenset({State.SCHEDULED, State.READY_TO_SCHEDULE}),
    Action.ARRIVE: frozenset({State.DISPATCHED}),
    Action.COMPLETE: frozenset({State.ON_SITE}),
    Action.HOLD: ACTIVE_STATES,
    Action.RESUME: frozenset({State.ON_HOLD}),
    Action.CANCEL: NON_TERMINAL_STATES,
    Action.ATTACH_EVIDENCE: NON_TERMINAL_STATES,
    Action.CONTACT_ATTEMPT: frozenset(State),
    Action.ESCALATE: frozenset(State),
    Action.MITIGATE: frozenset(State),
}

NOTE_ACTIONS = frozenset({Action.CONTACT_ATTEMPT, Action.ESCALATE, Action.MITIGATE})

#: Every (from, action, to) edge a ticket may take; nothing else may ever happen.
TRANSITIONS: frozenset[tuple[State | None, Action, State]] = frozenset(
    {(None, Action.CREATE, State.NEW), (None, Action.CREATE, State.READY_TO_SCHEDULE)}
    | {(s, Action.UPDATE, s) for s in NON_TERMINAL_STATES}
    | {(State.NEW, Action.UPDATE, State.READY_TO_SCHEDULE)}
    | {(s, Action.SCHEDULE, State.SCHEDULED) for s in SOURCE_STATES[Action.SCHEDULE]}
    | {(s, Action.DISPATCH, State.DISPATCHED) for s in SOURCE_STATES[Action.DISPATCH]}
    | {(State.DISPATCHED, Action.ARRIVE, State.ON_SITE)}
    | {(State.ON_SITE, Action.COMPLETE, State.COMPLETED)}
    | {(s, Action.HOLD, State.ON_HOLD) for s in ACTIVE_STATES}
    | {(State.ON_HOLD, Action.RESUME, s) for s in ACTIVE_STATES}
    | {(s, Action.CANCEL, State.CANCELLED) for s in NON_TERMINAL_STATES}
    | {(s, a, s) for a in NOTE_ACTIONS for s in State}
    | {(s, Action.ATTACH_EVIDENCE, s) for s in NON_TERMINAL_STATES}
)

_EVENT_TYPES: Mapping[Action, str] = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.SCHEDULE: "scheduled",
    Action.DISPATCH: "dispatched",
    Action.ARRIVE: "arrived",
    Action.COMPLETE: "completed",
    Action.HOLD: "held",
    Action.RESUME: "resumed",
    Action.CANCEL: "cancelled",
    Action.ATTACH_EVIDENCE: "evidence_attached",
    Action.CONTACT_ATTEMPT: "contact_attempt",
    Action.ESCALATE: "escalation",
    Action.MITIGATE: "mitigation",
}


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Update:
    """Set allow-listed fields (already validated); `None` values are ignored."""

    fields: Mapping[str, Any]
    reason: str | None = None
    action = Action.UPDATE


@dataclass(frozen=True, slots=True)
class Schedule:
    technician_id: str
    window_start: datetime
    window_end: datetime
    reason: str | None = None
    action = Action.SCHEDULE


@dataclass(frozen=True, slots=True)
class Dispatch:
    technician_id: str | None = None
    bypass_reason: str | None = None
    reason: str | None = None
    action = Action.DISPATCH


@dataclass(frozen=True, slots=True)
class Arrive:
    reason: str | None = None
    action = Action.ARRIVE


@dataclass(frozen=True, slots=True)
class Complete:
    reason: str | None = None
    action = Action.COMPLETE


@dataclass(frozen=True, slots=True)
class Hold:
    cause: HoldCause
    reason: str
    action = Action.HOLD


@dataclass(frozen=True, slots=True)
class Resume:
    reason: str | None = None
    action = Action.RESUME


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str
    action = Action.CANCEL


@dataclass(frozen=True, slots=True)
class AttachEvidence:
    """Attach one item; refused once the ticket holds `limit` items (None: no limit)."""

    kind: EvidenceKind
    tag: str | None
    reason: str | None = None
    limit: int | None = None
    action = Action.ATTACH_EVIDENCE


@dataclass(frozen=True, slots=True)
class Note:
    """A contact attempt, escalation or mitigation: recorded, never moves the ticket."""

    action: Action
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.action not in NOTE_ACTIONS:
            raise ValueError(f"{self.action} is not a note; notes are {sorted(NOTE_ACTIONS)}")


Command = (
    Update
    | Schedule
    | Dispatch
    | Arrive
    | Complete
    | Hold
    | Resume
    | Cancel
    | AttachEvidence
    | Note
)


# --- decisions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    action: Action
    event_type: str
    from_state: State | None
    ticket: Ticket
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def to_state(self) -> State:
        return self.ticket.state


@dataclass(frozen=True, slots=True)
class Rejected:
    action: Action
    event_type: str
    state: State
    code: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


Decision = Accepted | Rejected


def create(ticket_id: str, fields: Mapping[str, Any]) -> Accepted:
    """A new ticket: READY_TO_SCHEDULE when nothing required is missing, NEW otherwise."""
    draft = _with_fields(Ticket(id=ticket_id, state=State.NEW), fields)
    state = State.READY_TO_SCHEDULE if not draft.missing_fields else State.NEW
    ticket = replace(draft, state=state)
    return Accepted(
        Action.CREATE, "created", None, ticket, {"missing_fields": ticket.missing_fields}
    )


def allowed_actions(ticket: Ticket) -> list[str]:
    """Actions the ticket's state admits (roles, evidence and P1 rules aside), sorted."""
    return list(_admitted(ticket.state, ticket.priority is Priority.P1)[0])


def allowed_tools(ticket: Ticket) -> list[str]:
    """The tools an agent calls for `allowed_actions(ticket)`, in the same order."""
    return list(_admitted(ticket.state, ticket.priority is Priority.P1)[1])


@functools.cache
def _admitted(state: State, p1: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`allowed_actions` and `allowed_tools` of a ticket in `state`: every ticket view lists
    both, and they depend on nothing else (a dozen combinations, worked out once)."""
    actions = [a for a, sources in SOURCE_STATES.items() if state in sources]
    if state is State.READY_TO_SCHEDULE and not p1:
        actions.remove(Action.DISPATCH)
    names = sorted(str(a) for a in actions)
    return tuple(names), tuple(tools_for(names))


def decide(ticket: Ticket, command: Command, template: IncidentTemplate | None) -> Decision:
    """Apply `command` to `ticket` under the rules of DESIGN section 4."""
    action = command.action
    if ticket.state not in SOURCE_STATES[action]:
        return _invalid(ticket, action, f"cannot {action} a ticket in state {ticket.state}")
    match command:
        case Update(fields=fields):
            return _update(ticket, fields)
        case Schedule():
            changes: dict[str, Any] = {
                "technician_id": command.technician_id,
                "window_start": command.window_start,
                "window_end": command.window_end,
            }
            return _accept(ticket, action, replace(ticket, state=State.SCHEDULED, **changes), {})
        case Dispatch():
            return _dispatch(ticket, command)
        case Arrive():
            return _accept(ticket, action, replace(ticket, state=State.ON_SITE), {})
        case Complete():
            unmet = unmet_requirements(template, ticket.evidence)
            if unmet:
                missing = [
                    {"kind": str(r.kind), "tag": r.tag, "description": r.description} for r in unmet
                ]
                labels = ", ".join(r.label for r in unmet)
                return Rejected(
                    action,
                    "completion_rejected",
                    ticket.state,
                    "evidence_missing",
                    f"completion needs evidence still missing: {labels}",
                    {
                        "missing_evidence": missing,
                        "incident_type": ticket.incident_type,
                        "allowed_actions": allowed_actions(ticket),
                        "allowed_tools": allowed_tools(ticket),
                    },
                )
            return _accept(ticket, action, replace(ticket, state=State.COMPLETED), {})
        case Hold(cause=cause):
            held = replace(
                ticket, state=State.ON_HOLD, state_before_hold=ticket.state, hold_cause=cause
            )
            return _accept(ticket, action, held, {"cause": str(cause)})
        case Resume():
            # SOURCE_STATES admits only ON_HOLD here, which always records where it came from.
            previous = ticket.state_before_hold or State.READY_TO_SCHEDULE
            if previous is State.NEW and not ticket.missing_fields:
                # Filled in while on hold: resume where an update would have taken it.
                previous = State.READY_TO_SCHEDULE
            resumed = replace(ticket, state=previous, state_before_hold=None, hold_cause=None)
            return _accept(ticket, action, resumed, {"cause": _str(ticket.hold_cause)})
        case Cancel():
            return _accept(ticket, action, replace(ticket, state=State.CANCELLED), {})
        case AttachEvidence(kind=kind, tag=tag, limit=limit):
            if limit is not None and ticket.evidence_count >= limit:
                return Rejected(
                    action,
                    "action_rejected",
                    ticket.state,
                    "evidence_limit_reached",
                    f"the ticket already holds {ticket.evidence_count} evidence items, the most"
                    f" one ticket may hold ({limit}); nothing was attached",
                    {
                        "limit": limit,
                        "count": ticket.evidence_count,
                        "allowed_actions": allowed_actions(ticket),
                        "allowed_tools": allowed_tools(ticket),
                    },
                )
            attached = replace(ticket, evidence=(*ticket.evidence, EvidenceSummary(kind, tag)))
            return _accept(ticket, action, attached, {"kind": str(kind), "tag": tag})
        case Note():
            return _accept(ticket, action, ticket, {})


def _update(ticket: Ticket, fields: Mapping[str, Any]) -> Decision:
    updated = _with_fields(ticket, fields)
    if updated.state is State.NEW and not updated.missing_fields:
        updated = replace(updated, state=State.READY_TO_SCHEDULE)
    changed = sorted(k for k, v in fields.items() if v is not None)
    return _accept(
        ticket,
        Action.UPDATE,
        updated,
        {"changed_fields": changed, "missing_fields": updated.missing_fields},
    )


def _dispatch(ticket: Ticket, command: Dispatch) -> Decision:
    if ticket.state is State.SCHEDULED:
        technician = command.technician_id or ticket.technician_id
        dispatched = replace(ticket, state=State.DISPATCHED, technician_id=technician)
        details: dict[str, Any] = {"bypass": False, "technician_id": technician}
        if technician != ticket.technician_id:
            details["reassigned_from"] = ticket.technician_id
        return _accept(ticket, Action.DISPATCH, dispatched, details)
    # READY_TO_SCHEDULE: only the emergency bypass skips scheduling.
    if ticket.priority is not Priority.P1:
        return _invalid(
            ticket,
            Action.DISPATCH,
            "only P1 tickets may be dispatched without scheduling (emergency bypass)",
        )
    problems = []
    if not command.bypass_reason:
        problems.append({"field": "bypass_reason", "message": "required for the emergency bypass"})
    if not command.technician_id:
        problems.append({"field": "technician_id", "message": "required for the emergency bypass"})
    if problems:
        code = "bypass_reason_required" if not command.bypass_reason else "technician_required"
        return Rejected(
            Action.DISPATCH,
            "action_rejected",
            ticket.state,
            code,
            "the emergency bypass needs a bypass_reason and a technician_id",
            {
                "invalid_fields": problems,
                "allowed_actions": allowed_actions(ticket),
                "allowed_tools": allowed_tools(ticket),
            },
        )
    dispatched = replace(ticket, state=State.DISPATCHED, technician_id=command.technician_id)
    return _accept(
        ticket,
        Action.DISPATCH,
        dispatched,
        {
            "bypass": True,
            "bypass_reason": command.bypass_reason,
            "technician_id": command.technician_id,
        },
    )


def _with_fields(ticket: Ticket, fields: Mapping[str, Any]) -> Ticket:
    changes = {k: v for k, v in fields.items() if v is not None}
    if "priority" in changes:
        changes["priority"] = Priority(changes["priority"])
    return replace(ticket, **changes)


def _accept(before: Ticket, action: Action, after: Ticket, details: Mapping[str, Any]) -> Accepted:
    return Accepted(action, _EVENT_TYPES[action], before.state, after, details)


def _invalid(ticket: Ticket, action: Action, message: str) -> Rejected:
    return Rejected(
        action,
        "action_rejected",
        ticket.state,
        "invalid_transition",
        message,
        {"allowed_actions": allowed_actions(ticket), "allowed_tools": allowed_tools(ticket)},
    )


def _str(value: object | None) -> str | None:
    return None if value is None else str(value)
