"""Scheduling rules: may this technician take this ticket in this window?

Pure: the caller loads the technician, the technician's other active assignments that touch
the window, and who else could take it, and passes the clock's `now`. `review` answers None
(the state machine may go on) or a `Rejected` whose details tell an agent what to do next.
The database's exclusion constraint is what finally forbids a double booking; the overlap
rule here turns the common case into a precise answer before the write is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ._machine import Rejected, Schedule, allowed_actions, allowed_tools
from ._model import Action, State, Ticket
from ._technicians import Technician

#: States in which a ticket holds its technician's time: at most one per technician at once.
ASSIGNED_STATES = frozenset({State.SCHEDULED, State.DISPATCHED, State.ON_SITE})


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """How far in the past a window may start (clock skew, a call that took a while) and
    the longest window one visit may book."""

    grace: timedelta = timedelta(minutes=5)
    max_window: timedelta = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Booking:
    """Another ticket's active assignment of the same technician."""

    ticket_id: str
    window_start: datetime
    window_end: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "ticket_id": self.ticket_id,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Availability:
    """What the caller found out about the asked technician and the window."""

    technician: Technician | None
    #: The technician's other active assignments, any time at or after the window's start.
    bookings: Sequence[Booking] = ()
    #: Active, skilled technicians free for the whole window (a bounded few).
    candidates: Sequence[str] = ()


def review(
    ticket: Ticket, command: Schedule, found: Availability, now: datetime, policy: WindowPolicy
) -> Rejected | None:
    """The first rule `command` breaks, as a rejection; None when it breaks none."""
    start, end = command.window_start, command.window_end
    problem = _window_problem(start, end, now, policy)
    if problem is not None:
        path, message = problem
        return _reject(
            ticket,
            "invalid_window",
            f"{path.removeprefix('/')} {message}",
            {
                "invalid_fields": [{"field": path, "message": message}],
                "not_before": (now - policy.grace).isoformat(),
                "max_window_hours": policy.max_window / timedelta(hours=1),
            },
        )
    technician, skill = found.technician, ticket.incident_type
    suggestions: dict[str, Any] = {"candidates": list(found.candidates)}
    if technician is None:
        return _reject(
            ticket,
            "technician_not_found",
            f"no technician {command.technician_id!r}; technician.list lists who exists",
            {"technician_id": command.technician_id, **suggestions},
        )
    if not technician.active:
        return _reject(
            ticket,
            "technician_inactive",
            f"technician {technician.id!r} is not active; choose one of the candidates",
            {"technician_id": technician.id, **suggestions},
        )
    if skill is not None and skill not in technician.skills:
        return _reject(
            ticket,
            "technician_lacks_skill",
            f"technician {technician.id!r} lacks the skill {skill!r} this incident needs",
            {
                "technician_id": technician.id,
                "required_skill": skill,
                "technician_skills": sorted(technician.skills),
                **suggestions,
            },
        )
    others = [b for b in found.bookings if b.ticket_id != ticket.id]
    clash = next((b for b in sorted(others, key=_key) if _overlaps(b, start, end)), None)
    if clash is not None:
        return conflict(ticket, command, clash, others, found.candidates)
    return None


def conflict(
    ticket: Ticket,
    command: Schedule,
    clash: Booking | None,
    bookings: Sequence[Booking],
    candidates: Sequence[str],
) -> Rejected:
    """The double-booking rejection; `clash` may be unknown when the database's constraint
    caught a booking committed after the caller looked."""
    start, end = command.window_start, command.window_end
    free_start = earliest_free(start, end - start, bookings)
    where = "" if clash is None else f" on ticket {clash.ticket_id}"
    return _reject(
        ticket,
        "schedule_conflict",
        f"technician {command.technician_id!r} is already booked{where} in that window",
        {
            "technician_id": command.technician_id,
            "conflict": None if clash is None else clash.to_json(),
            "candidates": list(candidates),
            "earliest_free_window": {
                "window_start": free_start.isoformat(),
                "window_end": (free_start + (end - start)).isoformat(),
            },
        },
    )


def earliest_free(start: datetime, length: timedelta, bookings: Sequence[Booking]) -> datetime:
    """The earliest start at or after `start` of a window of `length` overlapping none of
    `bookings` (windows are half-open: one may start when another ends)."""
    for booking in sorted(bookings, key=_key):
        if _overlaps(booking, start, start + length):
            start = max(start, booking.window_end)
    return start


def _window_problem(
    start: datetime, end: datetime, now: datetime, policy: WindowPolicy
) -> tuple[str, str] | None:
    if end <= start:
        return "/window_end", "must be after window_start"
    if start < now - policy.grace:
        return "/window_start", (
            f"is in the past: windows may start at most {_minutes(policy.grace)} minutes"
            f" before now ({now.isoformat()})"
        )
    if end - start > policy.max_window:
        return "/window_end", (
            f"makes a window longer than {policy.max_window / timedelta(hours=1):g} hours;"
            " book one visit at a time"
        )
    return None


def _minutes(delta: timedelta) -> str:
    return f"{delta / timedelta(minutes=1):g}"


def _overlaps(booking: Booking, start: datetime, end: datetime) -> bool:
    return booking.window_start < end and start < booking.window_end


def _key(booking: Booking) -> tuple[datetime, str]:
    return booking.window_start, booking.ticket_id


def _reject(ticket: Ticket, code: str, message: str, details: dict[str, Any]) -> Rejected:
    return Rejected(
        Action.SCHEDULE,
        "action_rejected",
        ticket.state,
        code,
        message,
        {
            **details,
            "allowed_actions": allowed_actions(ticket),
            "allowed_tools": allowed_tools(ticket),
        },
    )
