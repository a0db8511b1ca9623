"""Approvals: list and read them, decide them (approve, deny, withdraw), expire them.

A decision is one transaction that locks the approval row first: two approvers, the expiry
sweep and the requester withdrawing serialise on it, and whoever comes second finds it
decided. Approving runs the bound call in the same transaction, through the ticket service's
own `apply`, as its original caller (the agent, its tool, request and correlation ids), and
stores its answer under the call's original Idempotency-Key: the agent's re-sent call gets
that answer as a replay, and the action happens exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from ..domain import APPROVER_ROLES, Actor, ActorType, ApprovalPolicy, Command, Role
from ..errors import ApiError, Conflict, Forbidden, NotFound
from ..metrics import ApiMetrics
from ..store import (
    ApprovalFilter,
    ApprovalRecord,
    ConnectionPool,
    Principal,
    StoredResponse,
    TicketRecord,
    connection,
    idempotency,
    tickets,
    transaction,
)
from ..store import approvals as store
from ._caller import Caller, event_for
from ._gate import approval_view, refusal
from ._tickets import Clock, TicketService

#: The command (and event details) of an action route from the body it was sent with.
Rebuild = Callable[[str, Mapping[str, Any]], tuple[Command, dict[str, Any]]]

#: Who records expiries on the timeline (as the SLA sweeper records breaches); its
#: principal is never authenticated, only named.
_SWEEPER = Caller(
    Principal("approval-sweeper", Role.GATEWAY, False),
    Actor(ActorType.SYSTEM, "approval-sweeper", Role.GATEWAY),
    request_id="",
)


@dataclass(frozen=True, slots=True)
class _Outcome:
    approval: ApprovalRecord
    #: A decision recorded (granted, denied, ...) for the metrics, or None.
    decision: str | None = None
    #: Raised once the transaction committed (what it recorded stays recorded).
    error: ApiError | None = None
    #: The bound call's answer, when it ran.
    response: StoredResponse | None = None


class ApprovalService:
    def __init__(
        self,
        pool: ConnectionPool,
        tickets_service: TicketService,
        policy: ApprovalPolicy,
        clock: Clock,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._tickets = tickets_service
        self.policy = policy
        self._clock = clock
        self._metrics = metrics

    # --- reads ------------------------------------------------------------------------

    async def page(
        self,
        caller: Caller,
        status: str | None,
        ticket_id: uuid.UUID | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], tuple[datetime, uuid.UUID] | None]:
        """Approvals the caller may see, oldest first, and the keyset of the next page."""
        where = ApprovalFilter(status, ticket_id, _visible_to(caller))
        async with connection(self._pool) as conn:
            found = await store.page(conn, where, after, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        cursor = (found[-1].requested_at, uuid.UUID(found[-1].id)) if more else None
        return [approval_view(a) for a in found], cursor

    async def recent_decided(self, caller: Caller, limit: int) -> list[dict[str, Any]]:
        """Decided approvals the caller may see, newest first (the console's history)."""
        async with connection(self._pool) as conn:
            found = await store.recent_decided(conn, _visible_to(caller), limit)
        return [approval_view(a) for a in found]

    async def get(self, caller: Caller, approval_id: uuid.UUID) -> dict[str, Any]:
        async with connection(self._pool) as conn:
            found = await store.get(conn, approval_id)
        return approval_view(_check_visible(caller, found, approval_id))

    # --- decisions --------------------------------------------------------------------

    async def approve(
        self, caller: Caller, approval_id: uuid.UUID, reason: str | None, rebuild: Rebuild
    ) -> dict[str, Any]:
        """Grant the approval and run its call; 403/404/409 as contract 18 says."""
        _check_decider(caller)

        async def work(conn: asyncpg.Connection, a: ApprovalRecord, now: datetime) -> _Outcome:
            # The call's own key before its ticket: the order a re-sent call takes them in.
            stored = await idempotency.claim(conn, a.key, now)
            record = await _lock_ticket(conn, a)
            if stored is None and await store.ticket_changed(conn, a.ticket_id, a.ticket_version):
                await idempotency.release(conn, a.key)
                stale = _decided(a, "stale", now, caller, reason)
                await self._record(conn, stale, record, caller, "approval_stale", now, reason)
                return _Outcome(stale, "stale", refusal(stale))
            granted = _decided(a, "approved", now, caller, reason)
            await self._record(conn, granted, record, caller, "approval_granted", now, reason)
            if stored is None:
                command, details = rebuild(a.action, a.arguments)
                approved_by = {"id": caller.actor.id, "role": str(caller.actor.role)}
                details = {**details, "approved_by": approved_by, "approval_id": a.id}
                # The event above took the next seq: the call appends after it.
                record = replace(record, last_seq=record.last_seq + 1)
                stored = await self._tickets.apply(
                    conn, _original(a), record, command, now, details
                )
                await idempotency.store(conn, a.key, stored)
            done = replace(
                granted,
                status="executed" if stored.status < 300 else "approved",
                result_status=stored.status,
                result_body=stored.body,
            )
            await store.decide(conn, done)
            return _Outcome(done, "granted", response=stored)

        return await self._decide(caller, approval_id, work)

    async def deny(self, caller: Caller, approval_id: uuid.UUID, reason: str) -> dict[str, Any]:
        _check_decider(caller)

        async def work(conn: asyncpg.Connection, a: ApprovalRecord, now: datetime) -> _Outcome:
            record = await _lock_ticket(conn, a)
            denied = _decided(a, "denied", now, caller, reason)
            await self._record(conn, denied, record, caller, "approval_denied", now, reason)
            return _Outcome(denied, "denied")

        return await self._decide(caller, approval_id, work)

    async def withdraw(
        self, caller: Caller, approval_id: uuid.UUID, reason: str | None
    ) -> dict[str, Any]:
        """Only the requester (the gateway asserting the same actor) withdraws."""

        async def work(conn: asyncpg.Connection, a: ApprovalRecord, now: datetime) -> _Outcome:
            record = await _lock_ticket(conn, a)
            withdrawn = _decided(a, "withdrawn", now, caller, reason)
            await self._record(conn, withdrawn, record, caller, "approval_withdrawn", now, reason)
            return _Outcome(withdrawn, "withdrawn")

        return await self._decide(caller, approval_id, work, withdrawing=True)

    async def sweep(self, batch: int = 500) -> int:
        """Mark pending approvals past their expiry expired, once each whatever the replicas;
        then refresh the approval gauges. Returns how many expired."""
        expired = 0
        while expired < batch:
            now = self._clock()
            async with transaction(self._pool) as conn:
                due = await store.claim_due(conn, now)
                if due is None:
                    break
                outcome = await self._expire(conn, due, now)
            self._count(outcome)
            expired += 1
        await self.refresh_gauges()
        return expired

    async def refresh_gauges(self) -> None:
        if self._metrics is None:
            return
        async with connection(self._pool) as conn:
            pending = await store.pending_by_tool(conn, self._clock())
        self._metrics.set_pending_approvals(self.policy.tools, pending)

    # --- helpers ----------------------------------------------------------------------

    async def _decide(
        self,
        caller: Caller,
        approval_id: uuid.UUID,
        work: Callable[[asyncpg.Connection, ApprovalRecord, datetime], Awaitable[_Outcome]],
        *,
        withdrawing: bool = False,
    ) -> dict[str, Any]:
        now = self._clock()
        async with transaction(self._pool) as conn:
            found = await store.get(conn, approval_id, lock=True)
            a = _check_visible(caller, found, approval_id)
            if withdrawing:
                _check_requester(caller, a)
            else:
                _check_approver(caller, a)
            if a.status != "pending":
                outcome = _Outcome(a, error=_decided_already(a))
            elif now >= a.expires_at:
                outcome = await self._expire(conn, a, now)
                outcome = replace(outcome, error=refusal(outcome.approval))
            else:
                outcome = await work(conn, a, now)
        self._count(outcome)
        if outcome.error is not None:
            raise outcome.error
        return approval_view(outcome.approval)

    async def _expire(self, conn: asyncpg.Connection, a: ApprovalRecord, now: datetime) -> _Outcome:
        record = await _lock_ticket(conn, a)
        expired = replace(a, status="expired", decided_at=now)
        await self._record(conn, expired, record, _SWEEPER, "approval_expired", now, None)
        return _Outcome(expired, "expired")

    async def _record(
        self,
        conn: asyncpg.Connection,
        a: ApprovalRecord,
        record: TicketRecord,
        actor: Caller,
        event_type: str,
        now: datetime,
        reason: str | None,
    ) -> None:
        """Store the approval's new status and append its event to the ticket's timeline."""
        await store.decide(conn, a)
        state = record.ticket.state
        event = event_for(actor, a.ticket_id, record.last_seq + 1, now, event_type, state, state)
        details = {"approval_id": a.id, "action": a.action, "rule": a.rule, "tool": a.tool}
        event = replace(event, reason=reason, details=details, request_id=actor.request_id or None)
        if actor is _SWEEPER:
            event = replace(event, role="system")  # as the SLA sweeper records itself
        await tickets.append_event(conn, event)

    def _count(self, outcome: _Outcome) -> None:
        metrics, a = self._metrics, outcome.approval
        if metrics is None or outcome.decision is None or a.decided_at is None:
            return
        metrics.approval_decisions.labels(a.tool, outcome.decision).inc()
        waited = (a.decided_at - a.requested_at).total_seconds()
        metrics.approval_wait.labels(a.tool).observe(waited)
        transition = outcome.response.transition if outcome.response else None
        if transition is not None and transition[0] is not None:
            metrics.transition(transition[0], transition[1]).inc()


def _decided(
    a: ApprovalRecord, status: str, now: datetime, caller: Caller, reason: str | None
) -> ApprovalRecord:
    return replace(
        a,
        status=status,
        decided_at=now,
        decided_by_id=caller.actor.id,
        decided_by_role=str(caller.actor.role),
        reason=reason,
    )


def _original(a: ApprovalRecord) -> Caller:
    """The caller of the approved call as it was asked: the agent behind the gateway."""
    return Caller(
        Principal(a.principal_id, Role.GATEWAY, True),
        a.requested_by,
        a.request_id,
        a.correlation_id,
        a.trace_id,
    )


async def _lock_ticket(conn: asyncpg.Connection, a: ApprovalRecord) -> TicketRecord:
    record = await tickets.lock(conn, uuid.UUID(a.ticket_id))
    assert record is not None  # approvals reference their ticket; tickets are never deleted
    return record


def _is_person(caller: Caller) -> bool:
    return not caller.principal.trusted_gateway and caller.actor.type is ActorType.HUMAN


def _visible_to(caller: Caller) -> tuple[str, str] | None:
    """None when the caller sees every approval (people who may approve); else whose."""
    if _is_person(caller) and caller.principal.role in APPROVER_ROLES:
        return None
    return (caller.principal.id, caller.actor.id)


def _check_visible(
    caller: Caller, found: ApprovalRecord | None, approval_id: uuid.UUID
) -> ApprovalRecord:
    # An approval the caller may not see is answered exactly like a missing one.
    mine = _visible_to(caller)
    if found is None or (mine is not None and mine != (found.principal_id, found.requested_by.id)):
        raise NotFound("approval_not_found", f"no approval {approval_id}")
    return found


def _check_decider(caller: Caller) -> None:
    if not _is_person(caller):
        raise Forbidden("forbidden", "approvals are decided by people, not by a gateway")
    if caller.principal.role not in APPROVER_ROLES:
        raise Forbidden(
            "forbidden",
            f"role {caller.principal.role} may not decide approvals",
            extensions={"role": str(caller.principal.role)},
        )


def _check_approver(caller: Caller, a: ApprovalRecord) -> None:
    if str(caller.principal.role) not in a.approvers:
        raise Forbidden(
            "forbidden",
            f"rule {a.rule} lets only {', '.join(a.approvers)} decide this approval",
            extensions={"role": str(caller.principal.role), "approvers": list(a.approvers)},
        )
    if caller.principal.id == a.requested_by.id:
        raise Forbidden("self_approval", "the requester of a call may not decide on it")


def _check_requester(caller: Caller, a: ApprovalRecord) -> None:
    if (caller.principal.id, caller.actor.id) != (a.principal_id, a.requested_by.id):
        raise Forbidden("forbidden", "only the requester may withdraw its approval request")


def _decided_already(a: ApprovalRecord) -> Conflict:
    return Conflict(
        "approval_decided",
        f"this approval is {a.status} already; a decision is final",
        extensions={"approval": approval_view(a)},
    )
