"""Use cases of dispatch-api: each mutation is one transaction, idempotent per principal.

A mutation claims its Idempotency-Key, loads and locks what it changes, asks the domain to
decide, writes the change and its timeline event, and stores its response under the key —
all before COMMIT. A failure before COMMIT rolls everything back, the key included.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from ..domain import (
    ACTION_TOOLS,
    ASSIGNED_STATES,
    GATED_ACTIONS,
    Accepted,
    Action,
    Actor,
    ApprovalPolicy,
    AttachEvidence,
    Command,
    EvidenceKind,
    IncidentTemplate,
    Rejected,
    Resume,
    Role,
    Schedule,
    SlaState,
    SlaTargets,
    Ticket,
    WindowPolicy,
    advance,
    create,
    decide,
    may_access,
    may_perform,
)
from ..errors import ApiError, Forbidden, NotFound, Unprocessable, problem
from ..metrics import ApiMetrics
from ..store import (
    ConnectionPool,
    EvidenceRecord,
    IdempotencyKey,
    StoredResponse,
    TicketFilter,
    TicketRecord,
    connection,
    idempotency,
    tickets,
    transaction,
)
from ..store import _evidence as evidence_store
from ..store import _sla as sla_store
from . import _fast as fast
from ._caller import Caller, event_for
from ._dry_run import DryRun, rehearse
from ._gate import gate, would_gate
from ._matching import matching_technicians
from ._scheduling import ScheduleRules, release
from ._views import event_view, queue_view, ticket_view

Clock = Callable[[], datetime]

_REJECTION_STATUS = {
    "invalid_transition": 409,
    "evidence_limit_reached": 409,
    "schedule_conflict": 409,
    "technician_not_found": 404,
}


@dataclass(frozen=True, slots=True)
class EvidenceUpload:
    kind: EvidenceKind
    tag: str | None
    content_type: str
    size_bytes: int
    sha256: str
    uri: str | None
    content: bytes | None
    description: str | None


class TicketService:
    def __init__(
        self,
        pool: ConnectionPool,
        templates: Mapping[str, IncidentTemplate],
        clock: Clock,
        metrics: ApiMetrics | None = None,
        targets: SlaTargets | None = None,
        max_evidence_per_ticket: int | None = None,
        window_policy: WindowPolicy | None = None,
        approvals: ApprovalPolicy | None = None,
    ) -> None:
        self._policy = ApprovalPolicy.defaults() if approvals is None else approvals
        self._rules = ScheduleRules(window_policy or WindowPolicy())
        self._targets = targets or SlaTargets.defaults()
        self._max_evidence = max_evidence_per_ticket
        self._pool = pool
        self._templates = templates
        self._clock = clock
        self._metrics = metrics

    # --- mutations --------------------------------------------------------------------

    async def create(
        self, caller: Caller, key: IdempotencyKey | DryRun, fields: Mapping[str, Any]
    ) -> StoredResponse:
        _require_role(caller.actor, Action.CREATE)

        async def work(conn: asyncpg.Connection, now: datetime) -> StoredResponse:
            decision = create(str(uuid.uuid4()), fields)
            ticket = decision.ticket
            event = self._event(caller, ticket.id, 1, now, decision.event_type, None, ticket.state)
            event = replace(event, details=dict(decision.details))
            sla = advance(SlaState(), None, ticket, now, now, self._targets)
            await tickets.insert(conn, ticket, sla, event)
            record = TicketRecord(ticket, now, now, now, 1, (), sla)
            body = {"ticket": ticket_view(record), "event": event_view(event)}
            return StoredResponse(201, orjson.dumps(body), transition=(None, str(ticket.state)))

        return await self._idempotent(key, work)

    async def act(
        self,
        caller: Caller,
        key: IdempotencyKey | DryRun,
        ticket_id: uuid.UUID,
        command: Command,
        details: Mapping[str, Any] | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> StoredResponse:
        """Apply a command; a rejection is stored and answered like a result.

        `details` are recorded on the timeline event (a contact attempt's channel, ...).
        An agent's call the approval policy gates answers 202 with its approval instead
        (`arguments`, the body as sent, are what the policy reads and the approval binds).
        """
        _require_role(caller.actor, command.action)
        if isinstance(key, DryRun) and key.tool_name and command.action in GATED_ACTIONS:
            key = replace(key, tool_name=ACTION_TOOLS[command.action])  # as the gate reads it

        async def work(conn: asyncpg.Connection, now: datetime) -> StoredResponse:
            record = await self._lock(conn, caller, ticket_id)
            if isinstance(key, DryRun):  # its answer says whether approval would be needed
                return await self._apply(conn, caller, record, command, now, details or {})
            template = self._templates.get(record.ticket.incident_type or "")
            # A call the domain refuses now is refused now: nobody is asked to approve it.
            refused = isinstance(decide(record.ticket, command, template), Rejected)
            gated = await gate(
                conn, self._policy, caller, key, record, command, arguments, now, refused
            )
            if gated is not None:
                return gated
            return await self._apply(conn, caller, record, command, now, details or {})

        if isinstance(key, IdempotencyKey) and not isinstance(command, Schedule):
            response = await self._fast(caller, key, ticket_id, command, details, arguments)
            if response is not None:
                return response
        return await self._idempotent(key, work)

    async def _fast(
        self,
        caller: Caller,
        key: IdempotencyKey,
        ticket_id: uuid.UUID,
        command: Command,
        details: Mapping[str, Any] | None,
        arguments: Mapping[str, Any] | None,
    ) -> StoredResponse | None:
        """The two-round-trip path (`_fast.act`), counted as `_idempotent` counts."""
        try:
            response = await fast.act(
                self._pool,
                caller,
                key,
                ticket_id,
                command,
                details or {},
                arguments,
                self._templates,
                self._targets,
                self._policy,
                self._clock(),
            )
        except Unprocessable as exc:
            if self._metrics is not None and exc.code == "idempotency_conflict":
                self._metrics.conflicts.inc()
            raise
        if response is not None and self._metrics is not None:
            self._count(self._metrics, response)
        return response

    async def attach_evidence(
        self,
        caller: Caller,
        key: IdempotencyKey | DryRun,
        ticket_id: uuid.UUID,
        upload: EvidenceUpload,
        reason: str | None = None,
    ) -> StoredResponse:
        _require_role(caller.actor, Action.ATTACH_EVIDENCE)

        async def work(conn: asyncpg.Connection, now: datetime) -> StoredResponse:
            record = await self._lock(conn, caller, ticket_id)
            evidence = EvidenceRecord(
                id=str(uuid.uuid4()),
                kind=upload.kind,
                tag=upload.tag,
                content_type=upload.content_type,
                size_bytes=upload.size_bytes,
                sha256=upload.sha256,
                uri=upload.uri,
                stored_inline=upload.content is not None,
                description=upload.description,
                captured_by_type=str(caller.actor.type),
                captured_by_id=caller.actor.id,
                captured_by_role=str(caller.actor.role),
                captured_at=now,
                request_id=caller.request_id,
            )
            command = AttachEvidence(upload.kind, upload.tag, reason, self._max_evidence)
            details = {
                "evidence_id": evidence.id,
                "content_type": evidence.content_type,
                "size_bytes": evidence.size_bytes,
                "sha256": evidence.sha256,
                "uri": evidence.uri,
            }
            response = await self._apply(conn, caller, record, command, now, details, evidence)
            if response.status < 300:
                await tickets.insert_evidence(conn, record.ticket.id, evidence, upload.content)
            return response

        return await self._idempotent(key, work)

    # --- reads ------------------------------------------------------------------------

    async def get(self, caller: Caller, ticket_id: uuid.UUID) -> dict[str, Any]:
        return ticket_view(await self.evidence(caller, ticket_id))

    async def page(
        self,
        caller: Caller,
        where: TicketFilter,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], tuple[datetime, uuid.UUID] | None]:
        """One page and the keyset cursor of the next, if any. Technicians see their own only."""
        if caller.actor.role is Role.TECHNICIAN:
            where = replace(where, technician_id=caller.actor.id)
        async with connection(self._pool) as conn:
            records = await tickets.list_page(conn, where, after, limit + 1)
            more = len(records) > limit
            records = records[:limit]
            matching = await matching_technicians(conn, records)
        cursor = (records[-1].created_at, uuid.UUID(records[-1].ticket.id)) if more else None
        now = self._clock()
        return [queue_view(r, now, matching.get(r.ticket.id)) for r in records], cursor

    async def sla(
        self, caller: Caller, status: str, at_risk: timedelta, limit: int
    ) -> list[dict[str, Any]]:
        """Active tickets breached (or at risk) now, most urgent first, as queue rows."""
        now = self._clock()
        async with connection(self._pool) as conn:
            rows = await sla_store.listing(conn, status, now, at_risk, limit)
            records = await tickets.get_many(conn, [r["id"] for r in rows])
        visible = [r for r in records if may_access(caller.actor, r.ticket)]
        return [queue_view(r, now) for r in visible]

    async def sweep_sla(self) -> int:
        """Record every SLA breach due now, once; returns how many were recorded."""
        async with connection(self._pool) as conn:
            priorities = await sla_store.sweep(conn, self._clock())
        if self._metrics is not None:
            for priority in priorities:
                self._metrics.sla_breaches.labels(priority=priority).inc()
        return len(priorities)

    async def timeline(
        self, caller: Caller, ticket_id: uuid.UUID, after_seq: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Events after `after_seq`, oldest first, and the `after_seq` of the next page if any."""
        async with connection(self._pool) as conn:
            _check_visible(caller, await tickets.get(conn, ticket_id), ticket_id)
            events = await tickets.timeline(conn, ticket_id, after_seq, limit + 1)
        following = events[limit - 1].seq if len(events) > limit else None
        return [event_view(e) for e in events[:limit]], following

    async def evidence(self, caller: Caller, ticket_id: uuid.UUID) -> TicketRecord:
        """The ticket with its evidence counts and newest items, if the caller may see it."""
        async with connection(self._pool) as conn:
            record = await tickets.get(conn, ticket_id)
        _check_visible(caller, record, ticket_id)
        assert record is not None
        return record

    async def evidence_page(
        self,
        caller: Caller,
        ticket_id: uuid.UUID,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> tuple[TicketRecord, list[EvidenceRecord], tuple[datetime, uuid.UUID] | None]:
        """The ticket, one page of its evidence oldest first, and the keyset of the next page."""
        async with connection(self._pool) as conn:
            record = await tickets.get(conn, ticket_id)
            _check_visible(caller, record, ticket_id)
            assert record is not None
            items = await evidence_store.page(conn, ticket_id, after, limit + 1)
        more = len(items) > limit
        items = items[:limit]
        cursor = (items[-1].captured_at, uuid.UUID(items[-1].id)) if more else None
        return record, items, cursor

    async def evidence_item(
        self, caller: Caller, ticket_id: uuid.UUID, evidence_id: uuid.UUID
    ) -> EvidenceRecord:
        await self.evidence(caller, ticket_id)
        async with connection(self._pool) as conn:
            found = await evidence_store.item(conn, ticket_id, evidence_id)
        if found is None:
            raise _no_evidence(ticket_id, evidence_id)
        return found

    async def evidence_content(
        self, caller: Caller, ticket_id: uuid.UUID, evidence_id: uuid.UUID
    ) -> tuple[str, bytes | None]:
        await self.evidence(caller, ticket_id)
        async with connection(self._pool) as conn:
            found = await tickets.evidence_content(conn, ticket_id, evidence_id)
        if found is None:
            raise _no_evidence(ticket_id, evidence_id)
        return found

    # --- helpers ----------------------------------------------------------------------

    async def _idempotent(
        self,
        key: IdempotencyKey | DryRun,
        work: Callable[[asyncpg.Connection, datetime], Awaitable[StoredResponse]],
    ) -> StoredResponse:
        now = self._clock()
        if isinstance(key, DryRun):  # no key claimed, nothing committed, nothing counted
            return await rehearse(self._pool, now, key, work, would_gate(self._policy))
        try:
            async with transaction(self._pool) as conn:
                stored = await idempotency.claim(conn, key, now)
                if stored is not None:
                    response = stored
                else:
                    response = await work(conn, now)
                    if response.transient:  # a pending approval: re-sends must look again
                        await idempotency.release(conn, key)
                    else:
                        await idempotency.store(conn, key, response)
        except Unprocessable as exc:
            if self._metrics is not None and exc.code == "idempotency_conflict":
                self._metrics.conflicts.inc()
            raise
        if self._metrics is not None:
            self._count(self._metrics, response)  # committed: now it happened
        return response

    @staticmethod
    def _count(metrics: ApiMetrics, response: StoredResponse) -> None:
        if response.replayed:
            metrics.replays.inc()
        elif response.transition is not None:
            before, after = response.transition
            if before is None:
                metrics.tickets_created.inc()
            else:
                metrics.transition(before, after).inc()

    async def _lock(
        self, conn: asyncpg.Connection, caller: Caller, ticket_id: uuid.UUID
    ) -> TicketRecord:
        record = await tickets.lock(conn, ticket_id)
        _check_visible(caller, record, ticket_id)
        assert record is not None
        return record

    async def _apply(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        record: TicketRecord,
        command: Command,
        now: datetime,
        extra_details: Mapping[str, Any],
        new_evidence: EvidenceRecord | None = None,
    ) -> StoredResponse:
        before = record.ticket
        template = self._templates.get(before.incident_type or "")
        decision = decide(before, command, template)
        if isinstance(decision, Accepted) and isinstance(command, Schedule):
            decision = await self._rules.review(conn, before, command, now) or decision
        seq = record.last_seq + 1
        reason = getattr(command, "reason", None)
        if isinstance(decision, Accepted):
            after = decision.ticket
            event = self._event(
                caller, before.id, seq, now, decision.event_type, before.state, after.state, reason
            )
            event = replace(event, details={**decision.details, **extra_details})
            sla = advance(record.sla, before, after, now, record.created_at, self._targets)
            if after.state in ASSIGNED_STATES and after.window_start is not None:
                refused = await self._rules.save(conn, record, after, sla, event)
                if refused is not None and isinstance(command, Resume):
                    # Another ticket took the window while this one was on hold: it resumes
                    # unassigned, to be scheduled again, rather than stay stuck on hold.
                    after, event = release(after, event, refused)
                    sla = advance(record.sla, before, after, now, record.created_at, self._targets)
                    await tickets.save(conn, record, after, sla, event)
                elif refused is not None:
                    return await self._reject(conn, caller, before, refused, seq, now, reason)
            else:
                await tickets.save(conn, record, after, sla, event)
            return fast.accepted_response(record, after, sla, event, now, new_evidence)
        return await self._reject(conn, caller, before, decision, seq, now, reason)

    async def apply(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        record: TicketRecord,
        command: Command,
        now: datetime,
        details: Mapping[str, Any],
    ) -> StoredResponse:
        """`command` on the ticket `record` (locked), exactly as a direct call applies it:
        an approved call runs here, under its original caller."""
        return await self._apply(conn, caller, record, command, now, details)

    async def _reject(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        before: Ticket,
        decision: Rejected,
        seq: int,
        now: datetime,
        reason: str | None,
    ) -> StoredResponse:
        details = {"action": str(decision.action), "code": decision.code, **decision.details}
        event = self._event(
            caller, before.id, seq, now, decision.event_type, before.state, before.state, reason
        )
        event = replace(event, details=details)
        await tickets.append_event(conn, event)
        error = ApiError(
            decision.code,
            decision.message,
            extensions={**decision.details, "ticket_id": before.id, "event_seq": seq},
        )
        status = _REJECTION_STATUS.get(decision.code, 422)
        body = {**problem(error), "status": status, "title": "Action rejected"}
        return StoredResponse(status, orjson.dumps(body))

    # Events are built the same way by every use case (approvals too).
    _event = staticmethod(event_for)


def _require_role(actor: Actor, action: Action) -> None:
    if not may_perform(actor, action):
        raise Forbidden(
            "forbidden",
            f"role {actor.role} may not {action}",
            extensions={"role": str(actor.role), "action": str(action)},
        )


def _check_visible(caller: Caller, record: TicketRecord | None, ticket_id: uuid.UUID) -> None:
    # A ticket the caller may not see is answered exactly like a missing one: a technician
    # must not learn which ids exist among the tickets not assigned to them.
    if record is None or not may_access(caller.actor, record.ticket):
        raise NotFound("ticket_not_found", f"no ticket {ticket_id}")


def _no_evidence(ticket_id: uuid.UUID, evidence_id: uuid.UUID) -> NotFound:
    return NotFound("evidence_not_found", f"ticket {ticket_id} has no evidence {evidence_id}")
