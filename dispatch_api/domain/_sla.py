"""SLA arithmetic: targets per priority, due times, pauses for customer-caused holds.

A ticket has two targets: response (technician on site) and resolution (completed), both
measured from creation. Time the ticket spends on a customer-caused hold is credited: the
clock stops at the hold and the due times move by the paused time on resume. A priority
change recomputes the due times from creation, keeping the credit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ._model import HoldCause, Priority, State, Ticket

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class SlaTargets:
    """Response and resolution targets in seconds, per priority."""

    response_s: dict[Priority, float]
    resolution_s: dict[Priority, float]

    @classmethod
    def defaults(cls) -> SlaTargets:
        hours = {
            Priority.P1: (2, 8),
            Priority.P2: (4, 24),
            Priority.P3: (24, 72),
            Priority.P4: (72, 168),
        }
        return cls(
            {p: r * HOUR for p, (r, _) in hours.items()},
            {p: c * HOUR for p, (_, c) in hours.items()},
        )

    def due(
        self, priority: Priority | None, created_at: datetime, paused_s: float
    ) -> tuple[datetime | None, datetime | None]:
        """(response due, resolution due); None for a ticket without priority yet."""
        if priority is None:
            return None, None
        credit = timedelta(seconds=paused_s)
        return (
            created_at + timedelta(seconds=self.response_s[priority]) + credit,
            created_at + timedelta(seconds=self.resolution_s[priority]) + credit,
        )


def remaining_s(due: datetime | None, now: datetime, paused_since: datetime | None) -> float | None:
    """Seconds left before `due` (negative when late); a paused clock does not run."""
    if due is None:
        return None
    effective_now = paused_since if paused_since is not None else now
    return (due - effective_now).total_seconds()


@dataclass(frozen=True, slots=True)
class SlaState:
    """The SLA clock of one ticket, as stored with it."""

    response_due_at: datetime | None = None
    resolution_due_at: datetime | None = None
    paused_since: datetime | None = None
    paused_s: float = 0.0
    provider_hold_since: datetime | None = None
    provider_hold_s: float = 0.0
    responded_at: datetime | None = None
    resolved_at: datetime | None = None


def advance(
    sla: SlaState,
    before: Ticket | None,
    after: Ticket,
    now: datetime,
    created_at: datetime,
    targets: SlaTargets,
) -> SlaState:
    """The clock after `before` became `after` at `now` (before is None on creation)."""
    paused_since, paused_s = sla.paused_since, sla.paused_s
    provider_since, provider_s = sla.provider_hold_since, sla.provider_hold_s
    was_held = before is not None and before.state is State.ON_HOLD
    if after.state is State.ON_HOLD and not was_held:
        if after.hold_cause is HoldCause.CUSTOMER:
            paused_since = now
        else:
            provider_since = now
    elif was_held and after.state is not State.ON_HOLD:
        if paused_since is not None:
            paused_s += (now - paused_since).total_seconds()
            paused_since = None
        if provider_since is not None:
            provider_s += (now - provider_since).total_seconds()
            provider_since = None
    responded_at = sla.responded_at
    if responded_at is None and after.state in (State.ON_SITE, State.COMPLETED):
        responded_at = now
    resolved_at = sla.resolved_at or (now if after.state is State.COMPLETED else None)
    response_due, resolution_due = targets.due(after.priority, created_at, paused_s)
    return SlaState(
        response_due,
        resolution_due,
        paused_since,
        paused_s,
        provider_since,
        provider_s,
        responded_at,
        resolved_at,
    )
